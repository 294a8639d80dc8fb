"""Run the user's effective batch as the largest micro-batch that fits in GPU memory.

``perDeviceTrainBatchSize x gradientAccumulationSteps`` sequences make one optimizer step.
Running them as 1 x 4 or 4 x 1 is the same math -- the same rows per step, and Trainer
normalizes the loss by the tokens of the whole step -- but a GPU does far more work per
second on 4 rows at once. So, unless ``training.autoMicroBatch`` is off, the trainer tries
the divisors of the effective batch from the largest down, keeps the first whose
forward+backward on full-length rows stays inside the memory budget, and accumulates the
rest. A resumed run may pick differently (say on another GPU) and still resumes exactly:
Trainer skips ``step x effective batch`` rows either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import TrainingSpec

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
    value = os.environ.get(MEMORY_FRACTION_ENV)
    if not value:
        return DEFAULT_MEMORY_FRACTION
    fraction = float(value)
    if not 0.1 <= fraction <= 1.0:
        raise ValueError(f"{MEMORY_FRACTION_ENV} must be between 0.1 and 1.0, not {value}")
    return fraction


def cuda_probe(model: Any, seq_len: int, vocab_size: int) -> Probe:
    """A probe that runs one forward+backward of ``size`` full-length rows and reports
    whether the peak stayed within the budget. Weights and RNG are left as they were:
    gradients are dropped and no optimizer step is taken."""
    import torch

    device = next(p for p in model.parameters()).device
    total = torch.cuda.get_device_properties(device).total_memory
    budget = total * memory_fraction()

    def probe(size: int) -> bool:
        cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state(device)
        was_training = model.training
        model.train()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fits = False
        try:
            ids = torch.randint(0, vocab_size, (size, seq_len), device=device)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_reserved(device)
            fits = peak <= budget
            log.info(
                "micro-batch %d x %d tokens: peak %.1f GiB of a %.1f GiB budget",
                size,
                seq_len,
                peak / 2**30,
                budget / 2**30,
            )
        except torch.cuda.OutOfMemoryError:
            log.info("micro-batch %d x %d tokens: out of memory", size, seq_len)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            torch.cuda.empty_cache()
            # Training's reported peak is its own, not the largest probe's.
            torch.cuda.reset_peak_memory_stats(device)
            torch.set_rng_state(cpu_rng)
            torch.cuda.set_rng_state(cuda_rng, device)
        return fits

    return probe
