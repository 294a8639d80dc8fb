"""transformers + PEFT: for machines without a GPU (tests, CI) or without Unsloth.

On CPU the model loads in float32 (4-bit needs bitsandbytes on CUDA, so load_in_4bit is
ignored with a log line), 8-bit optimizers become adamw_torch, and Unsloth's offloaded
gradient checkpointing becomes the standard one. LoRA goes on the attention Linear modules
through ``target_modules`` and on the MoE experts through PEFT's ``target_parameters``:
gpt-oss keeps each layer's experts as fused 3-D parameters (``mlp.experts.gate_up_proj``,
``mlp.experts.down_proj``), not as Linear modules.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig

from ..lora_args import check_module_targets, peft_lora_kwargs
from ..memory_plan import MemoryPlan
from ..sources import ModelSource
from .base import Backend, Precision

log = logging.getLogger(__name__)

_NEEDS_BITSANDBYTES = {"adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"}
_EXPERT_LEAVES = ("gate_up_proj", "down_proj")


def expert_parameter_paths(model: Any) -> list[str]:
    """Suffixes (e.g. ``mlp.experts.gate_up_proj``) of the fused 3-D expert parameters."""
    found: list[str] = []
    for name, param in model.named_parameters():
        parts = name.split(".")
        if param.ndim != 3 or parts[-1] not in _EXPERT_LEAVES or "experts" not in parts:
            continue
        suffix = ".".join(parts[parts.index("experts") - 1 :])
        if suffix not in found:
            found.append(suffix)
    return found


def _bitsandbytes_usable(cuda: bool) -> bool:
    return cuda and importlib.util.find_spec("bitsandbytes") is not None


class TransformersBackend(Backend):
    def __init__(self, *, cuda: bool) -> None:
        self.cuda = cuda
        self.description = f"transformers + PEFT on {'CUDA' if cuda else 'CPU'}"

    @property
    def use_cpu(self) -> bool:
        return not self.cuda

    def _dtype(self, config: TrainerConfig) -> Any:
        import torch

        if not self.cuda:
            return torch.float32
        if config.model.dtype != "auto":
            return getattr(torch, config.model.dtype)
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def load(
        self,
        config: TrainerConfig,
        source: ModelSource,
        token: str | None,
        plan: MemoryPlan,
    ) -> tuple[Any, Any]:
        # Trainer sets checkpointing up (trainer_gradient_checkpointing), not loading; the
        # embedding stays with the model.
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = self._dtype(config)
        kwargs: dict[str, Any] = {"dtype": dtype, "token": token}
        if source.revision:
            kwargs["revision"] = source.revision
        if config.model.load_in_4bit:
            if _bitsandbytes_usable(self.cuda):
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=dtype,
                )
            else:
                log.warning(
                    "model.loadIn4bit is ignored: 4-bit loading needs bitsandbytes on a CUDA "
                    "GPU; loading %s weights instead",
                    str(dtype).removeprefix("torch."),
                )
        if not self.cuda and config.model.dtype not in ("auto", "float32"):
            log.warning("model.dtype %s is ignored on CPU; using float32", config.model.dtype)
        log.info("loading %s with transformers (%s)", source.description, dtype)
        base: Any = AutoModelForCausalLM.from_pretrained(source.name_or_path, **kwargs)
        base.config.use_cache = False  # the KV cache is useless in training and costs memory
        tokenizer = AutoTokenizer.from_pretrained(
            source.name_or_path, token=token, revision=source.revision
        )

        experts = expert_parameter_paths(base)
        lora_kwargs = peft_lora_kwargs(config.lora, experts)
        if experts:
            log.info("LoRA on the MoE expert parameters %s via target_parameters", experts)
        torch.manual_seed(config.training.seed)  # the same LoRA initialisation every run
        check_module_targets(base, lora_kwargs["target_modules"])
        model: Any = get_peft_model(base, LoraConfig(**lora_kwargs))
        trainable, total = model.get_nb_trainable_parameters()
        log.info(
            "LoRA rank %d on %s: %d trainable parameters of %d (%.3f%%)",
            config.lora.rank,
            ", ".join(lora_kwargs["target_modules"] + lora_kwargs.get("target_parameters", [])),
            trainable,
            total,
            100 * trainable / max(total, 1),
        )
        return model, tokenizer

    def optimizer(self, requested: str) -> str:
        if requested in _NEEDS_BITSANDBYTES and not _bitsandbytes_usable(self.cuda):
            log.warning(
                "training.optimizer %s needs bitsandbytes on a CUDA GPU; using adamw_torch",
                requested,
            )
            return "adamw_torch"
        if requested == "adamw_torch_fused" and not self.cuda:
            return "adamw_torch"
        return requested

    def precision(self, config: TrainerConfig) -> Precision:
        if not self.cuda:
            return Precision(bf16=False, fp16=False)
        import torch

        dtype = self._dtype(config)
        return Precision(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)

    def trainer_gradient_checkpointing(self, gradient_checkpointing: str) -> bool:
        if gradient_checkpointing == "unsloth":
            log.info(
                "gradient checkpointing unsloth (offloaded) needs Unsloth; using standard "
                "gradient checkpointing"
            )
        return gradient_checkpointing != "off"

    def sft_trainer_class(self) -> type:
        """TRL's SFTTrainer; on CPU with the loss from the model's own full logits, because
        TRL computes its fused, chunked LM-head loss with a Triton kernel, which needs a GPU.
        The loss is the same token-level cross-entropy over the same labels; of TRL's extra
        metrics only the eval set's token accuracy is computed (entropy is not)."""
        trainer_class = super().sft_trainer_class()
        if self.cuda:
            return trainer_class
        from transformers import Trainer

        log.info("computing the loss from full logits: TRL's fused LM-head loss needs a GPU")

        class CpuSFTTrainer(trainer_class):  # type: ignore[misc, valid-type]
            def compute_loss(
                self,
                model: Any,
                inputs: dict[str, Any],
                return_outputs: bool = False,
                num_items_in_batch: Any = None,
            ) -> Any:
                inputs["use_cache"] = False
                if self.aux_loss_enabled:
                    inputs["output_router_logits"] = True
                if self.model.training:
                    return Trainer.compute_loss(
                        self,
                        model,
                        inputs,
                        return_outputs=return_outputs,
                        num_items_in_batch=num_items_in_batch,
                    )
                # Evaluating: the full logits are here anyway, so the eval set's token
                # accuracy is reported as TRL's fused loss reports it on a GPU.
                loss, outputs = Trainer.compute_loss(
                    self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
                )
                labels = inputs["labels"][..., 1:]
                predicted = outputs.logits[..., :-1, :].argmax(dim=-1)
                counted = labels != -100
                correct = ((predicted == labels) & counted).sum()
                total = counted.sum()
                accuracy = (correct / total).item() if total > 0 else 0.0
                self._metrics["eval"]["mean_token_accuracy"].append(accuracy)
                return (loss, outputs) if return_outputs else loss

        return CpuSFTTrainer

    def save_merged(self, model: Any, tokenizer: Any, out_dir: Path) -> None:
        import torch

        merged = model.merge_and_unload()
        merged = merged.to(torch.bfloat16)
        merged.save_pretrained(str(out_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
