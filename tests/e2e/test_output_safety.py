"""Two FineTuneJobs never write one output: with different learning rates and the same
explicit output.pvc.path, the one that starts second fails fast (exit 78, never retried)
with the trainer's reason naming the path and the other run, and the first succeeds with
its own adapter. Once the first has finished, a job of the other config is refused for
the first's checkpoints, naming the path and the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.pytest_plugin import PodLogs

from .ftj import FineTuneJobs
from .test_training import (  # noqa: F401 (fixtures)
    RUN_TIMEOUT,
    claims,
    no_trainer_left_behind,
    tiny_inputs,
)
from .training_helpers import OUTPUT_CLAIM, check_manifest_dir, host_path, training_spec

pytestmark = pytest.mark.e2e

SHARED_PATH = "shared-run"
LEASE_FILE = ".output-lease.json"


def _spec(learning_rate: float, max_steps: int, save_steps: int = 10) -> dict[str, Any]:
    spec = training_spec(
        save_steps=save_steps, output={"pvc": {"claimName": OUTPUT_CLAIM, "path": SHARED_PATH}}
    )
    spec["training"]["learningRate"] = learning_rate
    spec["training"]["maxSteps"] = max_steps
    return spec


def _failed_once(ftjs: FineTuneJobs, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Failed status of ``name`` and its one trainer pod's termination (no retry)."""
    status: dict[str, Any] = ftjs.wait_phase(name, "Failed", timeout=RUN_TIMEOUT)
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return status, terminated


def test_a_second_job_on_the_same_output_path_fails_and_the_first_succeeds(
    ftjs: FineTuneJobs,
    claims: dict[str, Path],  # noqa: F811
    pod_logs: PodLogs,
    wait_for: Callable[..., Any],
) -> None:
    output_dir = claims[OUTPUT_CLAIM] / SHARED_PATH
    output_uri = f"pvc://{OUTPUT_CLAIM}/{SHARED_PATH}"
    # Long enough to outlive the second trainer's watch of its lease (a renewal is seen
    # within 15 s of the second's start): a first run that ends sooner releases the lease,
    # and the second is then refused for the first's checkpoints instead (tested below).
    ftjs.apply("first", _spec(5.0e-3, max_steps=300, save_steps=100))
    # The first trainer holds the output's lease from before it reads anything there.
    lease = wait_for(
        lambda: (
            json.loads((output_dir / LEASE_FILE).read_text())
            if (output_dir / LEASE_FILE).is_file()
            else None
        ),
        timeout=RUN_TIMEOUT,
        interval=0.2,
        message="the first trainer's output lease",
    )

    ftjs.apply("second", _spec(1.0e-3, max_steps=12))
    status, terminated = _failed_once(ftjs, "second")
    assert status["reason"] == "OutputInUse", status
    assert terminated["exitCode"] == 78
    message = status["message"]
    assert f"the output {output_uri} is in use by another trainer" in message, message
    assert f"run {lease['holder']}" in message, message
    assert "its own output" in message

    first = ftjs.wait_status(
        "first",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        timeout=RUN_TIMEOUT,
        what="the first run to finish",
    )
    assert first["phase"] == "Succeeded", first
    adapter = host_path(first["output"]["adapterUri"], claims)
    assert adapter == output_dir / "final_model"
    first_fingerprint = check_manifest_dir(adapter)["fingerprint"]
    assert not (output_dir / LEASE_FILE).exists()  # released at exit

    # Re-created after the first run ended: no live holder now, but the output holds the
    # other config's checkpoints.
    ftjs.kubectl("delete", "finetunejob", "second", "--wait=true", "--timeout=60s")
    ftjs.apply("second", _spec(1.0e-3, max_steps=12))
    status, terminated = _failed_once(ftjs, "second")
    assert status["reason"] == "IncompatibleCheckpoint", status
    assert terminated["exitCode"] == 78
    message = status["message"]
    assert f"{output_uri}/" in message and f"fingerprint {first_fingerprint}" in message, message
    assert "new output path" in message and "delete the old output" in message
    # The first run's adapter is untouched.
    assert check_manifest_dir(adapter)["fingerprint"] == first_fingerprint
