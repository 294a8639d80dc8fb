"""The pure translators from the config to PEFT's and Unsloth's LoRA arguments."""

from __future__ import annotations

from finetune_api.config import LoraSpec, TrainerConfig
from finetune_trainer.lora_args import (
    peft_lora_kwargs,
    split_lora_targets,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)

GPT_OSS_EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def test_expert_names_become_target_parameters_on_a_moe_model() -> None:
    modules, params = split_lora_targets(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"], GPT_OSS_EXPERTS
    )
    assert modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert params == GPT_OSS_EXPERTS


def test_gate_and_up_aliases_map_to_the_fused_parameter_once() -> None:
    modules, params = split_lora_targets(["q_proj", "gate_proj", "up_proj"], GPT_OSS_EXPERTS)
    assert modules == ["q_proj"]
    assert params == ["mlp.experts.gate_up_proj"]


def test_a_dense_model_keeps_every_name_a_module() -> None:
    names = ["q_proj", "gate_proj", "up_proj", "down_proj"]
    assert split_lora_targets(names, []) == (names, [])


def test_peft_kwargs() -> None:
    kwargs = peft_lora_kwargs(LoraSpec(rank=4, alpha=8, dropout=0.1), GPT_OSS_EXPERTS)
    assert kwargs["r"] == 4 and kwargs["lora_alpha"] == 8 and kwargs["lora_dropout"] == 0.1
    assert kwargs["task_type"] == "CAUSAL_LM" and kwargs["bias"] == "none"
    assert kwargs["target_parameters"] == GPT_OSS_EXPERTS
    assert "target_parameters" not in peft_lora_kwargs(LoraSpec(), [])


def test_unsloth_kwargs_match_the_original_example() -> None:
    kwargs = unsloth_peft_kwargs(LoraSpec(), seed=3407, gradient_checkpointing="unsloth")
    assert kwargs == {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"],
        "bias": "none",
        "use_gradient_checkpointing": "unsloth",
        "random_state": 3407,
        "use_rslora": False,
        "loftq_config": None,
    }
    off = unsloth_peft_kwargs(LoraSpec(), seed=1, gradient_checkpointing="off")
    assert off["use_gradient_checkpointing"] is False


def test_unsloth_load_kwargs_place_the_embedding_where_the_plan_says() -> None:
    config = TrainerConfig.model_validate({"training": {"maxSteps": 5}})
    common = {"token": None, "dtype": None, "use_gradient_checkpointing": "unsloth"}
    kwargs = unsloth_load_kwargs(
        config,
        name_or_path="unsloth/gpt-oss-20b",
        revision=None,
        offload_embedding=True,
        **common,
    )
    assert kwargs == {
        "model_name": "unsloth/gpt-oss-20b",
        "max_seq_length": 1024,
        "load_in_4bit": True,
        "dtype": None,
        "token": None,
        "full_finetuning": False,
        "use_gradient_checkpointing": "unsloth",
        "random_state": 3407,
        # The plan's yes or no, never Unsloth's "auto".
        "offload_embedding": True,
    }
    pinned = unsloth_load_kwargs(
        config, name_or_path="m", revision="abc123", offload_embedding=False, **common
    )
    assert pinned["offload_embedding"] is False and pinned["revision"] == "abc123"
