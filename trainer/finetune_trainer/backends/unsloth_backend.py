"""The product path: Unsloth on a CUDA GPU, as the original example ran it.

``FastLanguageModel.from_pretrained`` loads the model (4-bit through bitsandbytes by
default) and ``get_peft_model`` adds LoRA on the attention projections and the MoE experts
(Unsloth maps gate_up_proj/down_proj to gpt-oss's expert weights itself) with the
gradient checkpointing the memory plan chose (Unsloth's offloaded kind, or none). Unsloth
must be imported before transformers, TRL and PEFT, which is why this module imports it at
the top and why the backend is chosen before anything else heavy is loaded. unsloth, its
TRL patches and bitsandbytes exist only in the GPU image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import unsloth  # noqa: F401  (first: it patches transformers, TRL and PEFT on import)

from finetune_api.config import TrainerConfig

from ..lora_args import check_module_targets, unsloth_load_kwargs, unsloth_peft_kwargs
from ..memory_plan import MemoryPlan
from ..sources import ModelSource
from .base import Backend, Precision

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class UnslothBackend(Backend):
    description = "Unsloth on CUDA"
    offloads_embedding = True

    def __init__(self, scratch: Path | None = None) -> None:
        self.scratch = scratch

    def load(
        self,
        config: TrainerConfig,
        source: ModelSource,
        token: str | None,
        plan: MemoryPlan,
    ) -> tuple[Any, Any]:
        import torch
        from unsloth import FastLanguageModel

        dtype = (
            None if config.model.dtype == "auto" else getattr(torch, _DTYPES[config.model.dtype])
        )
        log.info(
            "loading %s with Unsloth (max_seq_length=%d, load_in_4bit=%s, dtype=%s, "
            "offload_embedding=%s, gradient_checkpointing=%s)",
            source.description,
            config.model.max_seq_length,
            config.model.load_in_4bit,
            config.model.dtype,
            plan.offload_embedding,
            plan.gradient_checkpointing,
        )
        peft_kwargs = unsloth_peft_kwargs(
            config.lora,
            seed=config.training.seed,
            gradient_checkpointing=plan.gradient_checkpointing,
        )
        kwargs = unsloth_load_kwargs(
            config,
            name_or_path=source.name_or_path,
            revision=source.revision,
            token=token,
            dtype=dtype,
            use_gradient_checkpointing=peft_kwargs["use_gradient_checkpointing"],
            offload_embedding=plan.offload_embedding,
        )
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
        check_module_targets(model, peft_kwargs["target_modules"])
        model = FastLanguageModel.get_peft_model(model, **peft_kwargs)
        trainable, total = model.get_nb_trainable_parameters()
        log.info(
            "LoRA rank %d on %s: %d trainable parameters of %d",
            config.lora.rank,
            ", ".join(peft_kwargs["target_modules"]),
            trainable,
            total,
        )
        return model, tokenizer

    def optimizer(self, requested: str) -> str:
        return requested

    def precision(self, config: TrainerConfig) -> Precision:
        from unsloth import is_bfloat16_supported

        if config.model.dtype == "float32":
            return Precision(bf16=False, fp16=False)
        if config.model.dtype == "float16":
            return Precision(bf16=False, fp16=True)
        if config.model.dtype == "bfloat16":
            return Precision(bf16=True, fp16=False)
        bf16 = bool(is_bfloat16_supported())
        return Precision(bf16=bf16, fp16=not bf16)

    def trainer_gradient_checkpointing(self, gradient_checkpointing: str) -> bool:
        return False  # get_peft_model(use_gradient_checkpointing=...) already set it up

    def save_merged(self, model: Any, tokenizer: Any, out_dir: Path) -> None:
        buffers = (self.scratch or out_dir.parent) / "unsloth-merge-buffers"
        model.save_pretrained_merged(
            str(out_dir),
            tokenizer,
            save_method="merged_16bit",
            temporary_location=str(buffers),
        )
