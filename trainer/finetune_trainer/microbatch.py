"""Run the user's effective batch as the largest micro-batch that fits in GPU memory.

``perDeviceTrainBatchSize x gradientAccumulationSteps`` sequences make one optimizer step.
Running them as 1 x 4 or 4 x 1 is the same math -- the same rows per step, and Trainer
normalizes the loss by the tokens of the whole step -- but a GPU does far more work per
second on 4 rows at once. So, unless ``training.autoMicroBatch`` is off, the trainer tries
the divisors of the effective batch from the largest down, keeps the first whose
estimated peak for full-length rows stays inside the memory budget, and accumulates the
rest. A resumed run may pick differently (say on another GPU) and still resumes exactly:
Trainer skips ``step x effective batch`` rows either way.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import TrainerConfig, TrainingSpec
from .errors import InvalidConfig

log = logging.getLogger(__name__)

# Peak memory may use this share of the GPU; the rest absorbs fragmentation and the
# optimizer step's own allocations.
DEFAULT_MEMORY_FRACTION = 0.85
MEMORY_FRACTION_ENV = "FTO_GPU_MEMORY_FRACTION"

Probe = Callable[[int], bool]


@dataclass(frozen=True)
class MicroBatchPlan:
    per_device: int
    accumulation: int
    reason: str

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation


def candidates(per_device: int, accumulation: int) -> list[int]:
    """Micro-batch sizes that keep the effective batch: its divisors no smaller than what
    the user asked for, largest first."""
    effective = per_device * accumulation
    return [m for m in range(effective, per_device - 1, -1) if effective % m == 0]


def plan_micro_batch(training: TrainingSpec, probe: Probe | None) -> MicroBatchPlan:
    asked = training.per_device_train_batch_size
    accumulation = training.gradient_accumulation_steps
    if not training.auto_micro_batch:
        return MicroBatchPlan(asked, accumulation, "as configured (autoMicroBatch is off)")
    if accumulation == 1:
        return MicroBatchPlan(asked, 1, "as configured (no accumulation to fold in)")
    if probe is None:
        return MicroBatchPlan(asked, accumulation, "as configured (no GPU to size it on)")
    effective = asked * accumulation
    for size in candidates(asked, accumulation):
        if size == asked:
            break
        if probe(size):
            return MicroBatchPlan(
                size,
                effective // size,
                f"largest micro-batch within the memory budget (effective batch {effective})",
            )
        log.info("micro-batch %d does not fit the memory budget", size)
    return MicroBatchPlan(asked, accumulation, "as configured (larger micro-batches do not fit)")


def memory_fraction() -> float:
    """The share of GPU memory training may plan for, from the environment (read at
    startup, so a bad value fails before the model loads)."""
    value = os.environ.get(MEMORY_FRACTION_ENV)
    if not value:
        return DEFAULT_MEMORY_FRACTION
    try:
        fraction = float(value)
    except ValueError:
        fraction = math.nan
    if not 0.1 <= fraction <= 1.0:  # NaN included
        raise InvalidConfig(
            f"{MEMORY_FRACTION_ENV} must be a number between 0.1 and 1.0, not {value!r}; "
            f"set it to one (say {DEFAULT_MEMORY_FRACTION}), or unset it for that default"
        )
    return fraction


def compute_device(model: Any) -> Any:
    """The GPU the model computes on: the device of its first CUDA parameter. Not simply
    the first parameter's: with ``model.offloadEmbedding`` that is the embedding table,
    which lives in host memory."""
    for parameter in model.parameters():
        if parameter.device.type == "cuda":
            return parameter.device
    raise RuntimeError("the model has no parameter on a CUDA device")


def cuda_estimate(model: Any, config: TrainerConfig, gpu_memory_fraction: float) -> Probe:
    """Whether ``size`` full-length rows fit in ``gpu_memory_fraction`` of the GPU: the
    memory the loaded model holds now, plus memory.py's estimate of what training adds at
    that micro-batch (activations, logits, LoRA gradients and optimizer state, overhead).

    An estimate rather than a trial forward/backward: on Unsloth a manual backward before
    training invalidates its compiled kernels, and recompiling costs more than it saves."""
    import torch

    from .memory import ModelShape, estimate_for

    device = compute_device(model)
    held = torch.cuda.memory_allocated(device)
    budget = torch.cuda.get_device_properties(device).total_memory * gpu_memory_fraction
    shape = ModelShape.from_config(model.config.to_dict())

    def fits(size: int) -> bool:
        estimate = estimate_for(config, shape, micro_batch=size)
        need = held + estimate.total - estimate.weights
        log.info(
            "micro-batch %d x %d tokens: about %.1f GiB of a %.1f GiB budget",
            size,
            config.model.max_seq_length,
            need / 2**30,
            budget / 2**30,
        )
        return need <= budget

    return fits
