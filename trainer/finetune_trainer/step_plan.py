"""How many optimizer steps the run takes: the one place the trainer computes it. The dry
run prints it, the run reports it (progress, the metrics endpoint, each step record, the
termination message) until the training loop starts; the loop's own count then takes over,
with a warning if they differ.

The arithmetic is the one transformers' Trainer uses, so the two agree for the backends
tested here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from finetune_api.config import TrainingSpec


@dataclass(frozen=True)
class StepPlan:
    rows: int
    micro_batch: int
    gradient_accumulation: int
    effective_batch: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_steps(rows: int, training: TrainingSpec) -> StepPlan:
    """Optimizer steps as Trainer counts them: the data loader yields ceil(rows / batch)
    micro-batches per epoch (the last one may be short), an optimizer step takes
    ``gradient_accumulation`` of them (the epoch's remainder makes one more, shorter step).
    With maxSteps the run stops there, wherever that falls in the data.

    The memory plan may split the effective batch into other micro-batches; the count is
    the same, since ceil(ceil(rows / m) / a) = ceil(rows / (m * a))."""
    batch = training.per_device_train_batch_size
    accumulation = training.gradient_accumulation_steps
    micro_batches = max(1, math.ceil(rows / batch))
    steps_per_epoch = max(1, math.ceil(micro_batches / accumulation))
    if training.max_steps is not None:
        total = training.max_steps
        epochs = total / steps_per_epoch
    else:
        assert training.num_epochs is not None
        total = math.ceil(training.num_epochs * steps_per_epoch)
        epochs = training.num_epochs
    return StepPlan(
        rows=rows,
        micro_batch=batch,
        gradient_accumulation=accumulation,
        effective_batch=batch * accumulation,
        micro_batches_per_epoch=micro_batches,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        epochs=round(epochs, 4),
    )
