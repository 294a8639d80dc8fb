"""The progress poller: which FineTuneJobs it revisits, and what it leaves counted."""

from __future__ import annotations

import json
from typing import Any

from finetune_operator.config import OperatorConfig
from finetune_operator.poller import ProgressPoller
from finetune_operator.reconciler import Reconciler

from .conftest import body, pod, terminated
from .test_reconciler import NOW, MemoryKube, running_pod


def polled(kube: MemoryKube) -> tuple[Reconciler, ProgressPoller]:
    def no_trainer_to_read(ip: str, timeout: float) -> None:
        return None  # the trainer's metrics endpoint: progress stays as it was

    operator = Reconciler(
        kube,  # type: ignore[arg-type]
        OperatorConfig(),
        clock=lambda: NOW,
        scraper=no_trainer_to_read,
    )
    return operator, ProgressPoller(operator, interval=1.0)


def gauge(operator: Reconciler, phase: str) -> Any:
    return operator.metrics.registry.get_sample_value(
        "finetune_operator_finetunejobs", {"phase": phase}
    )


def test_a_run_that_ends_under_the_poller_stays_counted_by_its_phase() -> None:
    kube = MemoryKube(body())
    operator, poller = polled(kube)
    operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
    kube.pods = [running_pod()]
    poller.poll_once()
    assert (gauge(operator, "Running"), operator.unfinished()) == (1, [("ml", "gpt-oss-ml")])
    job = next(iter(kube.jobs.values()))
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    message = json.dumps({"status": "failed", "reason": "OutOfMemory", "message": "CUDA OOM"})
    kube.pods = [pod("Failed", state=terminated(1, message))]
    poller.poll_once()
    assert kube.ftj["status"]["phase"] == "Failed"
    assert operator.unfinished() == []  # no longer polled
    assert (gauge(operator, "Failed"), gauge(operator, "Running")) == (1, 0)


def test_a_deleted_finetunejob_is_forgotten() -> None:
    kube = MemoryKube(body())
    operator, poller = polled(kube)
    operator.reconcile("ml", "gpt-oss-ml")
    assert gauge(operator, "Pending") == 1
    kube.ftj = None  # type: ignore[assignment]
    poller.poll_once()
    assert operator.unfinished() == []
    assert gauge(operator, "Pending") == 0
