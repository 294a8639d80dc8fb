"""What a backend provides: a model with LoRA applied and the settings that differ between
Unsloth on CUDA and plain transformers + PEFT. Everything after loading (SFTTrainer,
checkpoints, metrics) is shared, so the GPU path runs the same loop the CPU tests run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig

from ..memory_plan import MemoryPlan
from ..sources import ModelSource


@dataclass(frozen=True)
class Precision:
    bf16: bool
    fp16: bool

    @property
    def label(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


class Backend(ABC):
    """One way of loading and adapting the model."""

    description: str
    # Whether load() can keep the input embedding in host memory (model.offloadEmbedding).
    offloads_embedding = False

    @abstractmethod
    def load(
        self,
        config: TrainerConfig,
        source: ModelSource,
        token: str | None,
        plan: MemoryPlan,
    ) -> tuple[Any, Any]:
        """Load the base model and tokenizer and add the LoRA adapter; return both, with
        the gradient checkpointing and embedding placement of ``plan``."""

    @abstractmethod
    def optimizer(self, requested: str) -> str:
        """The optimizer name to give Trainer (a requested one may be unavailable here)."""

    @abstractmethod
    def precision(self, config: TrainerConfig) -> Precision:
        """Mixed-precision flags for Trainer."""

    @abstractmethod
    def trainer_gradient_checkpointing(self, gradient_checkpointing: str) -> bool:
        """Whether Trainer should turn gradient checkpointing on itself for the planned
        mode (False when the backend already did, as Unsloth does in get_peft_model)."""

    @abstractmethod
    def save_merged(self, model: Any, tokenizer: Any, out_dir: Path) -> None:
        """Write the base model with the adapter merged in, in 16-bit, to ``out_dir``."""

    @property
    def use_cpu(self) -> bool:
        return False

    def memory_budget(self, gpu_memory_fraction: float) -> float | None:
        """The bytes of GPU memory training may plan for (``gpu_memory_fraction`` of the GPU
        the model will load on; see memory_plan.py), or None where GPU memory does not
        apply (CPU): the micro-batch and checkpointing then stay as configured."""
        import torch

        if self.use_cpu or not torch.cuda.is_available():
            return None
        device = torch.cuda.current_device()
        return float(torch.cuda.get_device_properties(device).total_memory * gpu_memory_fraction)

    def sft_trainer_class(self) -> type:
        """TRL's SFTTrainer, imported after the backend's own imports (Unsloth patches it)."""
        # trl.SFTTrainer, not the submodule's: Unsloth replaces the package attribute.
        from trl import SFTTrainer  # type: ignore[attr-defined]

        return SFTTrainer

    def sft_config_class(self) -> type:
        from trl import SFTConfig  # type: ignore[attr-defined]

        return SFTConfig
