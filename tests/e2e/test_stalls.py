"""Stalls end to end: a real trainer frozen with SIGSTOP (its training and its metrics
endpoint stop, as in a hang) on the local control plane. Past
spec.lifecycle.progressDeadlineSeconds the FineTuneJob is Stalled with a Warning Event and
stays Running; thawed, it clears; with onStall: Restart the pod is deleted and the Job's
next pod resumes from the newest checkpoint and finishes."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.pytest_plugin import PodLogs

from . import test_training as training
from .ftj import FineTuneJobs
from .training_helpers import MAX_STEPS, OUTPUT_CLAIM, trainer_steps, training_spec

pytestmark = pytest.mark.e2e

# The training e2e module's fixtures: the tiny model and dataset on PVCs, and the clean-up
# that waits for every trainer of a test to be gone.
tiny_inputs = training.tiny_inputs
claims = training.claims
no_trainer_left_behind = training.no_trainer_left_behind

# Short, but longer than any stage of the tiny run on a busy machine (importing torch
# included), so only the frozen trainer is ever found stalled.
DEADLINE_SECONDS = 30
# The deadline, the poller's backoff for a silent endpoint (30 s at most), and room.
STALL_TIMEOUT = DEADLINE_SECONDS + 90


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c["type"] == kind]
    assert found, status
    return found[0]


def _stalled(status: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Stalled" and c["status"] == "True" for c in status.get("conditions") or []
    )


def _freeze_after_first_checkpoint(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    name: str,
    output_dir: Path,
    wait_for: Callable[..., Any],
) -> tuple[str, int]:
    pod, checkpoint = training._running_pod_after_first_checkpoint(ftjs, name, output_dir, wait_for)
    assert cluster.agent is not None
    assert cluster.agent.signal_containers(ftjs.namespace, pod, signal.SIGSTOP) == 1
    return pod, checkpoint


def _check_stalled(ftjs: FineTuneJobs, name: str, pod: str) -> dict[str, Any]:
    status: dict[str, Any] = ftjs.wait_status(
        name, _stalled, timeout=STALL_TIMEOUT, what=f"{name} to be Stalled"
    )
    assert status["phase"] == "Running", status
    assert status["reason"] == "ProgressDeadlineExceeded", status
    stalled = _condition(status, "Stalled")
    assert stalled["reason"] == "ProgressDeadlineExceeded"
    assert _condition(status, "Reconciling")["status"] == "False"
    message = stalled["message"]
    # The step, since when, the stage, why it cannot be seen, and the fix.
    step = status["progress"]["step"]
    assert f"step {step}/{MAX_STEPS}" in message, message
    assert "no training progress since" in message and f"is {DEADLINE_SECONDS}s" in message
    assert f"stage {status['progress']['stage']}" in message, message
    assert status["progress"]["stage"] in ("Training", "Saving"), status
    assert "its metrics endpoint is not answering" in message, message
    assert "spec.lifecycle.progressDeadlineSeconds" in message and pod in message
    warnings = [
        e
        for e in ftjs.events(name)
        if e["reason"] == "ProgressDeadlineExceeded" and e["type"] == "Warning"
    ]
    assert warnings, ftjs.events(name)
    return status


def test_a_frozen_trainer_is_stalled_and_clears_when_it_goes_on(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],
    wait_for: Callable[..., Any],
) -> None:
    name = "stall-report"
    lifecycle = {"progressDeadlineSeconds": DEADLINE_SECONDS}
    ftjs.apply(name, training_spec(save_steps=4, lifecycle=lifecycle))
    pod, _ = _freeze_after_first_checkpoint(ftjs, cluster, name, claims[OUTPUT_CLAIM], wait_for)
    status = _check_stalled(ftjs, name, pod)
    assert "set spec.lifecycle.onStall: Restart" in status["message"], status
    # Report only: the same trainer, still there.
    uid = ftjs.get(name)["metadata"]["uid"]
    assert [p["metadata"]["name"] for p in ftjs.pods(uid)] == [pod]

    assert cluster.agent is not None
    cluster.agent.signal_containers(ftjs.namespace, pod, signal.SIGCONT)
    status = training._wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status
    assert _condition(status, "Stalled")["status"] == "False"
    assert status.get("restarts", 0) == 0
    assert [p["metadata"]["name"] for p in ftjs.pods(uid)] == [pod]


def test_on_stall_restart_resumes_from_the_checkpoint_and_finishes(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],
    pod_logs: PodLogs,
    wait_for: Callable[..., Any],
) -> None:
    # Reported first; then onStall is changed on the running FineTuneJob (lifecycle is
    # editable), and the operator restarts the trainer it has found stalled.
    name = "stall-restart"
    lifecycle = {"progressDeadlineSeconds": DEADLINE_SECONDS}
    ftjs.apply(name, training_spec(save_steps=4, lifecycle=lifecycle))
    first, checkpoint = _freeze_after_first_checkpoint(
        ftjs, cluster, name, claims[OUTPUT_CLAIM], wait_for
    )
    _check_stalled(ftjs, name, first)
    ftjs.patch(name, {"spec": {"lifecycle": {"onStall": "Restart"}}})

    # The frozen trainer cannot act on SIGTERM: it is killed after its grace period.
    status = training._wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1, status
    assert _condition(status, "Stalled")["status"] == "False"
    second = training._second_pod(ftjs, name, first)
    assert status["podName"] == second
    second_log = pod_logs(ftjs.namespace, second)
    resumed = training._resumed_step(second_log)
    assert resumed >= checkpoint, (resumed, checkpoint)
    steps = trainer_steps(second_log)
    assert steps[0] == resumed + 1 and steps[-1] == MAX_STEPS, steps
    job = ftjs.jobs(name)[0]
    assert job["status"].get("failed") == 1, job["status"]  # one of backoffLimit's retries
    messages = [
        e["message"] for e in ftjs.events(name) if e["reason"] == "ProgressDeadlineExceeded"
    ]
    assert any(f"deleting trainer pod {first}" in m for m in messages), messages
    ftjs.reasons(name, "Restarted")
