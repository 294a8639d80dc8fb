"""Evaluation end to end: a FineTuneJob with an eval set and early stopping, applied with
kubectl, trained by the real trainer on the tiny model, stops before maxSteps with the best
checkpoint's adapter as final_model, and its status carries the eval loss and says which
step final_model holds and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from finetune_localcluster.cluster import LocalCluster

from .ftj import FineTuneJobs
from .test_training import RUN_TIMEOUT, claims, no_trainer_left_behind, tiny_inputs
from .training_helpers import MAX_STEPS, StatusHistory, check_manifest_dir, host_path, training_spec

__all__ = ["claims", "no_trainer_left_behind", "tiny_inputs"]  # fixtures shared with training

pytestmark = pytest.mark.e2e


def _adapter(directory: Path) -> dict[str, Any]:
    return load_file(str(directory / "adapter_model.safetensors"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_early_stopping_keeps_the_best_checkpoint_as_final_model(
    ftjs: FineTuneJobs, cluster: LocalCluster, claims: dict[str, Path]
) -> None:
    name = "eval-run"
    spec = training_spec(save_steps=2)
    # A quarter of the rows held out; an evaluation at every checkpoint (every 2 steps).
    # No improvement can beat a minDelta of 1000, so the second evaluation (step 4) is the
    # one the patience of 1 runs out on: training stops there, long before maxSteps.
    spec["dataset"]["eval"] = {"fraction": 0.25, "seed": 5}
    spec["training"]["earlyStopping"] = {"patience": 1, "minDelta": 1000}
    spec["output"]["keep"] = "best"
    with StatusHistory(cluster, ftjs.namespace, name) as history:
        ftjs.apply(name, spec)
        status = ftjs.wait_status(
            name,
            lambda s: s.get("phase") in ("Succeeded", "Failed"),
            timeout=RUN_TIMEOUT,
            what=f"{name} to finish training",
        )
        history.wait_for_phase(status["phase"])
    assert status["phase"] == "Succeeded", status
    assert (
        "stopped early at step 4: the eval loss did not improve by more than 1000 for "
        "1 evaluation" in status["message"]
    ), status["message"]

    progress = status["progress"]
    assert (progress["step"], progress["totalSteps"]) == (4, MAX_STEPS)
    final_dir = host_path(status["output"]["adapterUri"], claims)
    history_lines = [json.loads(line) for line in (final_dir / "metrics.jsonl").open()]
    evaluated = {r["step"]: r["eval_loss"] for r in history_lines if "eval_loss" in r}
    assert sorted(evaluated) == [2, 4]
    assert progress["evalLoss"] == evaluated[4]
    assert progress["evalLossDisplay"] == f"{evaluated[4]:.4g}"

    best_step = min(evaluated, key=lambda step: evaluated[step])
    output = status["output"]
    assert output["finalModelStep"] == best_step
    selection = f"best eval loss {evaluated[best_step]:.4g} at step {best_step}"
    assert output["finalModelSelection"] == selection
    assert status["message"].endswith(f"; final_model: {selection}")
    checkpoint_dir = final_dir.parent / f"checkpoint-{best_step}"
    assert check_manifest_dir(checkpoint_dir)["step"] == best_step
    assert _same(_adapter(final_dir), _adapter(checkpoint_dir))
    other = 2 if best_step == 4 else 4
    assert not _same(_adapter(final_dir), _adapter(final_dir.parent / f"checkpoint-{other}"))
    assert not (final_dir.parent / "checkpoint-6").exists()
