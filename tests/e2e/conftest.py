"""End-to-end fixtures: the CRD installed in the session cluster and the operator running
in-process against it (restartable, for the tests that restart it mid-way)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_operator.config import OperatorConfig
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.runner import EmbeddedOperator

from .ftj import FineTuneJobs

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejobs.yaml"

pytestmark = pytest.mark.e2e


def e2e_operator_config(**overrides: Any) -> OperatorConfig:
    """Fast polling and a short grace period so the tests do not wait long."""
    settings: dict[str, Any] = {
        "trainer_image": "localhost/finetune-trainer:e2e",
        "progress_poll_seconds": 1.0,
        "metrics_timeout_seconds": 1.0,
        "trainer_grace_period_seconds": 60,
        "liveness_endpoint": None,
        # The test S3 server runs on loopback, which FineTuneJobs may not reach by default.
        "allowed_s3_endpoints": ("127.0.0.1",),
        # The test MLflow server too (tests/e2e/test_tracking.py).
        "allowed_tracking_hosts": ("127.0.0.1",),
    }
    settings.update(overrides)
    return OperatorConfig(**settings)


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> Path:
    cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(CRD)])
    cluster.kubectl(
        ["wait", "--for=condition=Established", "--timeout=60s", "crd/finetunejobs.finetune.dev"]
    )
    return CRD


class OperatorHandle:
    """The in-process operator; ``restart()`` stops it and starts a fresh one."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.api_client = cluster.api_client()
        self.running: EmbeddedOperator | None = None
        self.config = e2e_operator_config()
        # One set of counters across restarts, as one long-running operator would keep.
        self.metrics = OperatorMetrics()

    def start(self, *, liveness: bool = False, **settings: Any) -> None:
        """Start with the e2e settings, changed by ``settings`` (OperatorConfig fields);
        ``liveness`` serves kopf's liveness endpoint at config.liveness_endpoint."""
        self.config = e2e_operator_config(**settings)
        self.running = EmbeddedOperator(
            self.api_client, self.config, metrics=self.metrics, liveness=liveness
        ).start()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, crd: Path) -> Iterator[OperatorHandle]:
    # The operator's own account of each decision, shown with a failing test's output (the
    # root logger passes WARNING and above only).
    logging.getLogger("finetune_operator").setLevel(logging.INFO)
    handle = OperatorHandle(cluster)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        handle.api_client.close()


@pytest.fixture
def ftjs(cluster: LocalCluster, operator: OperatorHandle, namespace: str) -> FineTuneJobs:
    """FineTuneJobs in this test's namespace, with the operator running."""
    return FineTuneJobs(cluster, namespace)
