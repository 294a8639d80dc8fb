"""A GPU that ran out of memory: recognised, and told as the settings to change. The same
settings on the same GPU run out the same way, so the run reports it as invalid input
(exit 78), not as a failure to retry."""

from __future__ import annotations

import sys
from typing import Literal

from finetune_api.config import TrainerConfig

from .memory_plan import MemoryPlan

# Where the run was when memory ran out: each has its own fix.
Stage = Literal["preparing", "loading", "training", "finishing"]
MEMORY_GUIDANCE = '"Memory guidance" in trainer/README.md'


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA allocation that failed (torch is only looked up, never imported, here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def out_of_memory_message(
    config: TrainerConfig, stage: Stage, plan: MemoryPlan | None, exc: BaseException
) -> str:
    """What ran out of GPU memory and which settings to change. The same settings on the
    same GPU run out the same way, so this is reported as invalid input, not retried."""
    # torch's message goes on about allocator internals; its first sentences say enough.
    detail = ". ".join(str(exc).split(". ")[:3])[:300]
    model, training = config.model, config.training
    if stage == "finishing" and config.output.merged_export == "merged_16bit":
        return (
            f"GPU out of memory while exporting the merged 16-bit model ({detail}); set "
            "output.mergedExport to none and merge the adapter elsewhere, or use a GPU with "
            f"more memory; see {MEMORY_GUIDANCE}"
        )
    if stage == "loading":
        fix = (
            "set model.loadIn4bit to true"
            if not model.load_in_4bit
            else "use a smaller model or a GPU with more memory"
        )
        return (
            f"GPU out of memory while loading the model ({detail}); the model does not fit "
            f"this GPU: {fix}; see {MEMORY_GUIDANCE}"
        )
    asked = training.per_device_train_batch_size
    changes = [f"lower model.maxSeqLength (now {model.max_seq_length})"]
    if plan is not None and plan.per_device > asked:
        changes.insert(
            0,
            f"set training.autoMicroBatch to false (the automatic micro-batch ran "
            f"{plan.per_device} sequences at once, not the {asked} configured)",
        )
    planned = plan.gradient_checkpointing if plan else training.gradient_checkpointing
    if planned == "off" and training.gradient_checkpointing == "auto":
        changes.insert(
            0,
            "set training.gradientCheckpointing to unsloth (auto turned it off, estimating "
            "that this micro-batch fits without it)",
        )
    if plan is not None and not plan.offload_embedding and model.offload_embedding is None:
        changes.append(
            "set model.offloadEmbedding to true (the plan kept the input embedding on the GPU)"
        )
    if asked > 1:
        changes.append(
            f"lower training.perDeviceTrainBatchSize (now {asked}) and raise "
            f"training.gradientAccumulationSteps (now {training.gradient_accumulation_steps}) "
            "to keep the effective batch"
        )
    if training.gradient_checkpointing == "off":
        changes.append("turn training.gradientCheckpointing back on")
    if not model.load_in_4bit:
        changes.append("set model.loadIn4bit to true")
    return (
        f"GPU out of memory while training ({detail}); these settings do not fit this GPU "
        f"and would fail the same way again. Change them: {'; or '.join(changes)}. "
        f"See {MEMORY_GUIDANCE}"
    )
