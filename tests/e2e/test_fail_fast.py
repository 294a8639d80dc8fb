"""Inputs that cannot work end a FineTuneJob on its first pod, on the real control plane:
a Hub model id the trainer cannot reach is Failed with reason InvalidModel, the message
naming model.name and the fix, and the Job never starts a second pod."""

from __future__ import annotations

import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.pytest_plugin import MakePvc, PodLogs

from .ftj import FineTuneJobs

pytestmark = pytest.mark.e2e

IMAGE = "failfast.test/trainer:1"
MODEL = "acme/no-such-model"
RUN_TIMEOUT = 300

# The trainer image's `finetune-train` with HF_ENDPOINT set, as an image (or a cluster's
# proxy settings) would set it: the FineTuneJob has no field for it.
_WRAPPER = """#!/bin/sh
export HF_ENDPOINT={endpoint}
exec {python} -m finetune_trainer.cli "$@"
"""


def _closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def unreachable_hub_image(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    """A trainer image whose Hub is a loopback port nothing listens on."""
    assert cluster.agent is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "finetune-train"
    script.write_text(_WRAPPER.format(endpoint=_closed_port(), python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cluster.agent.images.add(IMAGE, bin_dir)
    try:
        yield IMAGE
    finally:
        cluster.agent.images.remove(IMAGE)


def test_an_unreachable_hub_model_fails_on_the_first_pod(
    ftjs: FineTuneJobs, make_pvc: MakePvc, pod_logs: PodLogs, unreachable_hub_image: str
) -> None:
    from finetune_trainer.fixtures import write_tiny_dataset

    inputs = make_pvc(ftjs.namespace, "inputs")
    write_tiny_dataset(inputs / "train.jsonl", rows=8)
    make_pvc(ftjs.namespace, "outputs")
    name = "unreachable-hub"
    ftjs.apply(
        name,
        {
            "model": {"name": MODEL},
            "dataset": {"pvc": {"claimName": "inputs", "path": "train.jsonl"}},
            "training": {"maxSteps": 2},
            "output": {"pvc": {"claimName": "outputs"}},
            "resources": {"gpus": 1, "cpu": "2", "memory": "4Gi"},
            "image": unreachable_hub_image,
            "lifecycle": {"backoffLimit": 3},
        },
    )
    status = ftjs.wait_phase(name, "Failed", timeout=RUN_TIMEOUT)
    assert status["reason"] == "InvalidModel", status
    message = status["message"]
    for part in (f"model.name {MODEL}", "cannot be reached", "model.pvc or model.s3"):
        assert part in message, message
    assert status["restarts"] == 0, status
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)  # one attempt: exit 78 is never retried
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 78
    log = pod_logs(ftjs.namespace, pod["metadata"]["name"])
    assert "Retrying in" not in log  # huggingface_hub's own backoff never ran
    assert f"model.name {MODEL}: the Hub check failed: " in log  # the details, for the log
    assert "ConnectError" in log and "ConnectError" not in message
    ftjs.kubectl("delete", "finetunejobs", "--all", "--wait=true", "--timeout=60s")
