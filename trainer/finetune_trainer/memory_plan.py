"""Fit training to the GPU: the micro-batch size, whether gradient checkpointing is
needed, and where the input embedding lives, all chosen before the model loads.

``perDeviceTrainBatchSize x gradientAccumulationSteps`` sequences make one optimizer step.
Running them as 1 x 4 or 4 x 1 is the same math -- the same rows per step, and Trainer
normalizes the loss by the tokens of the whole step -- but a GPU does far more work per
second on 4 rows at once. So, unless ``training.autoMicroBatch`` is off, the trainer tries
the divisors of the effective batch from the largest down, keeps the first whose
estimated peak for full-length rows stays inside the memory budget, and accumulates the
rest. A resumed run may pick differently (say on another GPU) and still resumes exactly:
Trainer skips ``step x effective batch`` rows either way.

Gradient checkpointing is the same kind of choice: it recomputes each layer's forward
during backward to save activation memory, which changes no gradient but costs a forward
pass per step. With ``training.gradientCheckpointing: auto`` (the default) it is turned off
when the chosen micro-batch fits the budget without it, and is Unsloth's offloaded
checkpointing otherwise. Likewise the input embedding (``model.offloadEmbedding`` unset,
the default) stays on the GPU when there is room, and goes to host memory otherwise: in
host memory it saves 1.08 GiB on gpt-oss-20b but slows every step (``bench/README.md``).

Order: the micro-batch is sized with the smallest footprint these defaults allow
(checkpointing on, embedding in host memory), since a larger micro-batch gains the most;
what room is left then keeps the embedding on the GPU (cheap), then turns checkpointing off
(costly in memory).

The plan is made before loading because Unsloth sets checkpointing up while it loads the
model; the weights in the estimate are computed from ``config.json``, which matches the
loaded model to within 0.1 GiB on gpt-oss-20b (``bench/README.md``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_api.config import TrainerConfig, TrainingSpec

from .errors import InvalidConfig
from .memory_estimate import (
    GIB,
    ModelShape,
    estimate_for,
    read_model_config,
    smallest_footprint,
)

if TYPE_CHECKING:
    from .backends import Backend
    from .sources import ModelSource

log = logging.getLogger(__name__)

# Peak memory may use this share of the GPU; the rest absorbs fragmentation and the
# optimizer step's own allocations.
DEFAULT_MEMORY_FRACTION = 0.85
MEMORY_FRACTION_ENV = "FTO_GPU_MEMORY_FRACTION"

# Whether ``micro_batch`` full-length rows fit the budget with the given checkpointing and
# the embedding in host memory (True) or on the GPU (False).
Fits = Callable[[int, str, bool], bool]


@dataclass(frozen=True)
class MemoryPlan:
    per_device: int
    accumulation: int
    gradient_checkpointing: str  # unsloth, on or off: never auto
    offload_embedding: bool
    reason: str

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation


def candidates(per_device: int, accumulation: int) -> list[int]:
    """Micro-batch sizes that keep the effective batch: its divisors no smaller than what
    the user asked for, largest first."""
    effective = per_device * accumulation
    return [m for m in range(effective, per_device - 1, -1) if effective % m == 0]


def plan_memory(
    config: TrainerConfig,
    fits: Fits | None,
    *,
    can_offload_embedding: bool = True,
    unsized: str = "no GPU to size it on",
) -> MemoryPlan:
    """The micro-batch, checkpointing and embedding placement to train with. ``fits`` is
    None where there is nothing to plan against (``unsized`` says why: no GPU, or no
    estimate for the model), and then the configured settings stand, with the smallest
    footprint for those left to the plan. A backend that cannot keep the embedding in
    host memory (``can_offload_embedding`` false) is planned with it on the GPU, whatever
    the config says."""
    training = config.training
    asked = training.per_device_train_batch_size
    accumulation = training.gradient_accumulation_steps
    configured_checkpointing = training.gradient_checkpointing
    configured_offload = config.model.offload_embedding if can_offload_embedding else False
    checkpointing, offload = smallest_footprint(config)
    offload = offload and can_offload_embedding
    per_device, kept = asked, _micro_batch_reason(training, fits, unsized)
    reason = kept or ""
    fitted = False  # whether the estimate has put the settings chosen so far in the budget
    if fits is not None and kept is None:
        effective = asked * accumulation
        reason = "as configured (larger micro-batches do not fit)"
        for size in candidates(asked, accumulation):
            if size == asked:
                break
            if fits(size, checkpointing, offload):
                per_device, fitted = size, True
                reason = (
                    f"largest micro-batch within the memory budget (effective batch {effective})"
                )
                break
            log.info("micro-batch %d does not fit the memory budget", size)
    if fits is not None and configured_offload is None:
        if fits(per_device, checkpointing, False):
            offload, fitted = False, True
            reason += "; input embedding on the GPU (it fits)"
        else:
            reason += "; input embedding in host memory (the GPU has no room for it)"
    if fits is not None and configured_checkpointing == "auto":
        if fits(per_device, "off", offload):
            checkpointing, fitted = "off", True
            reason += "; gradient checkpointing off (the micro-batch fits without it)"
        else:
            reason += "; gradient checkpointing unsloth (the micro-batch needs it)"
    if fits is not None and not fitted and not fits(per_device, checkpointing, offload):
        # Not an error: the estimate errs high (2.4 GiB over the measured peak of
        # gpt-oss-20b at 1 x 4), and the run tells for sure.
        reason += (
            "; the estimate puts even this over the budget, so the GPU may run out of "
            "memory (the estimate errs high)"
        )
        log.warning("the memory estimate exceeds the budget for the settings chosen")
    return MemoryPlan(
        per_device, asked * accumulation // per_device, checkpointing, offload, reason
    )


def _micro_batch_reason(training: TrainingSpec, fits: Fits | None, unsized: str) -> str | None:
    """Why the configured micro-batch stands without trying others, or None to try them."""
    if not training.auto_micro_batch:
        return "as configured (autoMicroBatch is off)"
    if training.gradient_accumulation_steps == 1:
        return "as configured (no accumulation to fold in)"
    if fits is None:
        return f"as configured ({unsized})"
    return None


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


def estimate_fits(config: TrainerConfig, model_config: dict[str, Any], budget: float) -> Fits:
    """``Fits`` from memory_estimate.py's estimate for this model and config against ``budget``
    bytes: weights, activations, logits, LoRA gradients and optimizer state, overhead."""
    shape = ModelShape.from_config(model_config)

    def fits(size: int, checkpointing: str, offload_embedding: bool) -> bool:
        need = estimate_for(
            config,
            shape,
            micro_batch=size,
            gradient_checkpointing=checkpointing,
            offload_embedding=offload_embedding,
        ).total
        log.info(
            "micro-batch %d x %d tokens, gradient checkpointing %s, embedding %s: about "
            "%.1f GiB of a %.1f GiB budget",
            size,
            config.model.max_seq_length,
            checkpointing,
            "in host memory" if offload_embedding else "on the GPU",
            need / GIB,
            budget / GIB,
        )
        return need <= budget

    return fits


def plan_for_backend(
    config: TrainerConfig,
    backend: Backend,
    model: ModelSource,
    token: str | None,
    gpu_memory_fraction: float,
) -> MemoryPlan:
    """The plan for the GPU ``backend`` trains on (``gpu_memory_fraction`` of its memory),
    estimated from ``model``'s config.json before its weights load; logged."""
    budget = backend.memory_budget(gpu_memory_fraction)
    fits, unsized = None, "no GPU to size it on"
    if budget is not None:
        unsized = "no memory estimate for this model's config.json"
        model_config = read_model_config(model, token)
        try:
            fits = estimate_fits(config, model_config, budget) if model_config else None
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("no memory estimate from this model's config.json (%r)", exc)
    if config.model.offload_embedding and not backend.offloads_embedding:
        log.warning(
            "model.offloadEmbedding is ignored: %s keeps it with the model", backend.description
        )
    plan = plan_memory(
        config, fits, can_offload_embedding=backend.offloads_embedding, unsized=unsized
    )
    embedding = "in host memory" if plan.offload_embedding else "on the GPU"
    log.info(
        "micro-batch %d x %d accumulation, gradient checkpointing %s, embedding %s: %s",
        plan.per_device,
        plan.accumulation,
        plan.gradient_checkpointing,
        embedding if budget is not None else "with the model",
        plan.reason,
    )
    return plan
