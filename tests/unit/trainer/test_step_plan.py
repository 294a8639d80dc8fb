"""The step plan: optimizer steps counted as Trainer counts them."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.step_plan import plan_steps


@pytest.mark.parametrize(
    ("rows", "training", "steps", "epochs"),
    [
        (100, {"maxSteps": 20}, 20, 20 / 25),  # 100 rows / 4 per step = 25 steps an epoch
        (10, {"maxSteps": 20}, 20, 20 / 3),  # 10 micro-batches -> 3 steps (last one short)
        (
            64,
            {"numEpochs": 2, "perDeviceTrainBatchSize": 2, "gradientAccumulationSteps": 4},
            16,
            2,
        ),
        (65, {"numEpochs": 1, "perDeviceTrainBatchSize": 2, "gradientAccumulationSteps": 4}, 9, 1),
        (3, {"numEpochs": 1.5}, 2, 1.5),
    ],
)
def test_plan_steps(rows: int, training: dict[str, Any], steps: int, epochs: float) -> None:
    config = TrainerConfig.from_mapping({"training": training})
    plan = plan_steps(rows, config.training)
    assert plan.total_steps == steps
    assert plan.epochs == pytest.approx(epochs, abs=1e-3)
    assert plan.effective_batch == (
        config.training.per_device_train_batch_size * config.training.gradient_accumulation_steps
    )
