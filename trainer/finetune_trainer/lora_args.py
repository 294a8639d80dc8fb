"""The LoRA settings as the libraries take them: pure translators from the config to the
arguments of PEFT's ``LoraConfig`` and of Unsloth's ``from_pretrained`` and
``get_peft_model``, and the check that every ``lora.targetModules`` name is a layer of the
model. No imports of those libraries here, so the translation is testable (and fast) on
its own; the backends build the objects. TRL's arguments are in trl_args.py.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from finetune_api.config import LoraSpec, TrainerConfig

from .errors import InvalidConfig

# Names a user may give for the MoE experts' fused projections. gpt-oss stores each layer's
# experts as two 3-D parameters (experts x in x out), not as Linear modules, so PEFT must
# reach them through ``target_parameters`` rather than ``target_modules``.
_EXPERT_ALIASES = {
    "gate_up_proj": "gate_up_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
    "down_proj": "down_proj",
}


def split_lora_targets(
    target_modules: Collection[str], expert_parameters: Collection[str]
) -> tuple[list[str], list[str]]:
    """Split the configured names into (Linear module names, expert parameter paths).

    ``expert_parameters`` are the fused expert parameters the model has, by path suffix
    (e.g. ``mlp.experts.gate_up_proj``). A configured name that matches one of them by its
    last segment (or an alias: gate_proj/up_proj for gate_up_proj) targets that parameter;
    on a dense model (no expert parameters) every name stays a module name.
    """
    modules: list[str] = []
    parameters: list[str] = []
    by_leaf = {p.rsplit(".", 1)[-1]: p for p in expert_parameters}
    for name in target_modules:
        leaf = _EXPERT_ALIASES.get(name)
        if leaf is not None and leaf in by_leaf:
            if by_leaf[leaf] not in parameters:
                parameters.append(by_leaf[leaf])
        elif name not in modules:
            modules.append(name)
    return modules, parameters


def peft_lora_kwargs(spec: LoraSpec, expert_parameters: Collection[str] = ()) -> dict[str, Any]:
    """Keyword arguments for ``peft.LoraConfig``."""
    modules, parameters = split_lora_targets(spec.target_modules, expert_parameters)
    kwargs: dict[str, Any] = {
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "bias": "none",
        "use_rslora": spec.use_rslora,
        "task_type": "CAUSAL_LM",
        "target_modules": modules,
    }
    if parameters:
        kwargs["target_parameters"] = parameters
    return kwargs


def unsloth_load_kwargs(
    config: TrainerConfig,
    *,
    name_or_path: str,
    revision: str | None,
    token: str | None,
    dtype: Any,
    use_gradient_checkpointing: Any,
    offload_embedding: bool,
) -> dict[str, Any]:
    """Keyword arguments for ``FastLanguageModel.from_pretrained``. ``offload_embedding``
    is the memory plan's yes or no (memory_plan.py), never Unsloth's own "auto", whose
    test of the GPU's memory does not know the micro-batch the plan chose."""
    kwargs: dict[str, Any] = {
        "model_name": name_or_path,
        "max_seq_length": config.model.max_seq_length,
        "load_in_4bit": config.model.load_in_4bit,
        "dtype": dtype,
        "token": token,
        "full_finetuning": False,
        "use_gradient_checkpointing": use_gradient_checkpointing,
        "random_state": config.training.seed,
        "offload_embedding": offload_embedding,
    }
    if revision:
        kwargs["revision"] = revision
    return kwargs


def unsloth_peft_kwargs(
    spec: LoraSpec, *, seed: int, gradient_checkpointing: str
) -> dict[str, Any]:
    """Keyword arguments for ``FastLanguageModel.get_peft_model``. Unsloth maps the expert
    names itself (fused parameters or, for its 4-bit gpt-oss, per-expert Linear modules),
    so the configured names go through unchanged."""
    return {
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": list(spec.target_modules),
        "bias": "none",
        "use_gradient_checkpointing": {"unsloth": "unsloth", "on": True, "off": False}[
            gradient_checkpointing
        ],
        "random_state": seed,
        "use_rslora": spec.use_rslora,
        "loftq_config": None,
    }


def layer_names(model: Any) -> list[str]:
    """The last name of each linear layer and 3-D expert weight of ``model``: the names
    lora.targetModules can use."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and "Linear" in type(module).__name__
    }
    names |= {name.rsplit(".", 1)[-1] for name, p in model.named_parameters() if p.dim() == 3}
    return sorted(names)


def check_module_targets(model: Any, targets: Collection[str]) -> None:
    """Every name in ``targets`` must name a layer of ``model``: PEFT quietly skips a name
    that matches nothing as long as another one matches, which would train less than the
    config says."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    check_target_names(targets, present, layer_names(model))


def check_target_names(
    targets: Collection[str], present: Collection[str], available: Collection[str]
) -> None:
    """Raise InvalidConfig naming each of ``targets`` that is not in ``present`` (the names
    the model's modules have), listing ``available`` (the names worth targeting). The
    experts' projection names are left to the backends: gpt-oss keeps them as parameters,
    Unsloth as per-expert modules of its own naming."""
    missing = [t for t in targets if t not in present and t not in _EXPERT_ALIASES]
    if missing:
        raise InvalidConfig(
            f"lora.targetModules: {', '.join(missing)} match no layer of this model; the "
            f"names this model has: {', '.join(sorted(available))}; fix or remove them"
        )
