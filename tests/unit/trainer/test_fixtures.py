"""The tiny gpt-oss model, its harmony tokenizer and chat template, and the tiny dataset."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.fixtures import (
    generate_rows,
    model_config,
    write_tiny_dataset,
    write_tiny_model,
)
from finetune_trainer.fixtures.__main__ import main as fixtures_main
from finetune_trainer.fixtures.harmony_render import render_harmony
from finetune_trainer.fixtures.tiny_tokenizer import PAD, SPECIAL_TOKENS

EXAMPLE = [
    {
        "role": "system",
        "content": "reasoning language: French\n\nYou are a helpful assistant.",
        "thinking": None,
    },
    {"role": "user", "content": "What is 2 + 3?", "thinking": None},
    {
        "role": "assistant",
        "content": "2 + 3 = 5.",
        "thinking": "L'utilisateur veut une addition simple : 2 + 3 = 5.",
    },
]
SYSTEM_HIGH = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: high\n\n# Valid channels: analysis, commentary, "
    "final. Channel must be included for every message.<|end|>"
)
DEVELOPER = (
    "<|start|>developer<|message|># Instructions\n\nreasoning language: French\n\n"
    "You are a helpful assistant.\n\n<|end|>"
)
USER = "<|start|>user<|message|>What is 2 + 3?<|end|>"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- The model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))


def test_model_is_gpt_oss_with_its_architecture(tiny_model: Any) -> None:
    config = tiny_model.config
    assert type(tiny_model).__name__ == "GptOssForCausalLM"
    assert config.model_type == "gpt_oss"
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert (config.num_local_experts, config.num_experts_per_tok) == (4, 2)
    layer = tiny_model.model.layers[0]
    # Attention sinks: one learned logit per head.
    assert tuple(layer.self_attn.sinks.shape) == (config.num_attention_heads,)
    # Fused expert weights, as gpt-oss stores them.
    experts = layer.mlp.experts
    assert tuple(experts.gate_up_proj.shape) == (4, 64, 2 * 64)
    assert tuple(experts.down_proj.shape) == (4, 64, 64)
    assert tuple(layer.mlp.router.weight.shape) == (4, 64)


def test_model_runs_a_forward_pass_and_generates(tiny_model: Any, tiny_tokenizer: Any) -> None:
    import torch

    text = tiny_tokenizer.apply_chat_template(
        EXAMPLE[:2], tokenize=False, add_generation_prompt=True
    )
    inputs = tiny_tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = tiny_model(**inputs, labels=inputs["input_ids"])
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], tiny_model.config.vocab_size)
    assert torch.isfinite(out.loss)
    generated = tiny_model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_model_directory_is_small(tiny_model_dir: Path) -> None:
    total = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert total < 5 * 1024 * 1024
    assert (tiny_model_dir / "model.safetensors").exists()


def test_same_seed_writes_the_same_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = write_tiny_model(tmp_path / "again", seed=0)
    other = write_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _sha256(again / name) == _sha256(tiny_model_dir / name), name
    assert _sha256(other / "model.safetensors") != _sha256(again / "model.safetensors")
    assert _sha256(other / "tokenizer.json") == _sha256(again / "tokenizer.json")


def test_generation_config_stops_like_gpt_oss(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    ids = tiny_tokenizer.convert_tokens_to_ids(["<|return|>", "<|call|>", "<|endoftext|>"])
    assert generation["eos_token_id"] == ids
    assert generation["pad_token_id"] == tiny_tokenizer.pad_token_id


# --- The tokenizer and chat template -------------------------------------------------------


def test_special_tokens_are_single_tokens(tiny_tokenizer: Any) -> None:
    for token in SPECIAL_TOKENS:
        ids = tiny_tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tiny_tokenizer.decode(ids) == token
    assert tiny_tokenizer.eos_token == "<|return|>"
    assert tiny_tokenizer.bos_token == "<|startoftext|>"
    assert tiny_tokenizer.pad_token == PAD
    assert tiny_tokenizer.is_fast
    assert 1000 < len(tiny_tokenizer) < 1100


def test_text_round_trips_in_every_language(tiny_tokenizer: Any) -> None:
    for row in generate_rows(10, seed=5):
        text = render_harmony(row["messages"])
        ids = tiny_tokenizer.encode(text, add_special_tokens=False)
        assert tiny_tokenizer.decode(ids) == text


def test_template_renders_a_multilingual_thinking_row(tiny_tokenizer: Any) -> None:
    rendered = tiny_tokenizer.apply_chat_template(EXAMPLE, tokenize=False, reasoning_effort="high")
    assert rendered == (
        SYSTEM_HIGH
        + DEVELOPER
        + USER
        + "<|start|>assistant<|channel|>analysis<|message|>"
        + "L'utilisateur veut une addition simple : 2 + 3 = 5.<|end|>"
        + "<|start|>assistant<|channel|>final<|message|>2 + 3 = 5.<|return|>"
    )


def test_template_generation_prompt_and_history(tiny_tokenizer: Any) -> None:
    prompt = tiny_tokenizer.apply_chat_template(
        EXAMPLE[:2], tokenize=False, add_generation_prompt=True, reasoning_effort="high"
    )
    assert prompt == SYSTEM_HIGH + DEVELOPER + USER + "<|start|>assistant"
    follow_up = [*EXAMPLE, {"role": "user", "content": "And 3 + 4?"}]
    history = tiny_tokenizer.apply_chat_template(
        follow_up, tokenize=False, add_generation_prompt=True, reasoning_effort="high"
    )
    # An earlier answer keeps only its final channel, closed by <|end|>.
    assert history == (
        SYSTEM_HIGH
        + DEVELOPER
        + USER
        + "<|start|>assistant<|channel|>final<|message|>2 + 3 = 5.<|end|>"
        + "<|start|>user<|message|>And 3 + 4?<|end|><|start|>assistant"
    )


def test_template_defaults_to_medium_effort(tiny_tokenizer: Any) -> None:
    rendered = tiny_tokenizer.apply_chat_template(EXAMPLE, tokenize=False)
    assert "\n\nReasoning: medium\n\n" in rendered


def test_template_matches_the_python_renderer(tiny_tokenizer: Any) -> None:
    for effort in ("low", "high"):
        for row in generate_rows(12, seed=3):
            for generation_prompt in (False, True):
                kwargs = {"reasoning_effort": effort, "add_generation_prompt": generation_prompt}
                assert tiny_tokenizer.apply_chat_template(
                    row["messages"], tokenize=False, **kwargs
                ) == render_harmony(row["messages"], **kwargs)


def test_template_renders_tool_calls_like_the_python_renderer(tiny_tokenizer: Any) -> None:
    chat = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "thinking": "Need the tool.",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]
    rendered = tiny_tokenizer.apply_chat_template(chat, tokenize=False)
    assert rendered == render_harmony(chat)
    assert (
        "<|start|>assistant to=functions.weather<|channel|>commentary json<|message|>"
        '{"city": "Paris"}<|call|><|start|>functions.weather to=assistant<|channel|>'
        'commentary<|message|>"sunny"<|end|>'
    ) in rendered


# --- The dataset ---------------------------------------------------------------------------


def test_dataset_rows_have_the_hub_dataset_shape(tiny_dataset_path: Path) -> None:
    rows = [json.loads(line) for line in tiny_dataset_path.read_text().splitlines()]
    assert len(rows) == 64
    for row in rows:
        assert list(row) == [
            "reasoning_language",
            "developer",
            "user",
            "analysis",
            "final",
            "messages",
        ]
        system, user, assistant = row["messages"]
        assert system == {
            "role": "system",
            "content": f"reasoning language: {row['reasoning_language']}\n\n{row['developer']}",
            "thinking": None,
        }
        assert user == {"role": "user", "content": row["user"], "thinking": None}
        assert assistant == {
            "role": "assistant",
            "content": row["final"],
            "thinking": row["analysis"],
        }
    languages = {row["reasoning_language"] for row in rows}
    assert languages == {"English", "French", "German", "Spanish", "Italian"}


def test_dataset_lengths_vary_with_a_long_tail(tiny_tokenizer: Any) -> None:
    lengths = sorted(
        len(tiny_tokenizer.encode(render_harmony(r["messages"]), add_special_tokens=False))
        for r in generate_rows(64, seed=0)
    )
    over = sum(length > 256 for length in lengths)
    assert 1 <= over <= 16, lengths
    assert lengths[-1] > 2 * lengths[len(lengths) // 2], lengths


def test_dataset_is_deterministic(tmp_path: Path) -> None:
    a = write_tiny_dataset(tmp_path / "a.jsonl", seed=4)
    b = write_tiny_dataset(tmp_path / "b.jsonl", seed=4)
    c = write_tiny_dataset(tmp_path / "c.jsonl", seed=5)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_dataset_formats_hold_the_same_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    expected = generate_rows(8, seed=2)
    as_json = write_tiny_dataset(tmp_path / "d.json", rows=8, seed=2, fmt="json")
    as_parquet = write_tiny_dataset(tmp_path / "d.parquet", rows=8, seed=2, fmt="parquet")
    assert json.loads(as_json.read_text()) == expected
    assert pq.read_table(as_parquet).to_pylist() == expected


def test_dataset_command_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_trainer.fixtures",
            "tiny-dataset",
            str(out),
            "--rows",
            "5",
            "--format",
            "parquet",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == str(out)
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 5


def test_model_command_writes_a_loadable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoConfig

    assert fixtures_main(["tiny-model", str(tmp_path / "m"), "--seed", "3", "--layers", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    config = AutoConfig.from_pretrained(str(tmp_path / "m"))
    assert config.num_hidden_layers == 4
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2


# --- Real-width presets (configs only: the weights are GPU-machine sized) ------------------


def _parameter_count(config: Any) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes without memory
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("preset", "layers"), [("gpt-oss-20b-2layer", 2), ("gpt-oss-20b", 24)])
def test_real_width_presets_have_gpt_oss_20b_shapes(
    preset: str, layers: int, tiny_tokenizer: Any
) -> None:
    config = model_config(preset, tokenizer=tiny_tokenizer)  # type: ignore[arg-type]
    assert config.model_type == "gpt_oss"
    assert (config.num_hidden_layers, config.num_local_experts, config.num_experts_per_tok) == (
        layers,
        32,
        4,
    )
    assert (config.hidden_size, config.intermediate_size, config.vocab_size) == (2880, 2880, 201088)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (64, 8, 64)
    assert config.sliding_window == 128
    assert config.layer_types == ["sliding_attention", "full_attention"] * (layers // 2)
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.rope_parameters["rope_theta"] == 150000.0
    assert config.rope_parameters["factor"] == 32.0
    assert config.max_position_embeddings == 131072
    # The tiny tokenizer's ids fit in the real vocabulary and drive generation.
    assert config.eos_token_id == tiny_tokenizer.convert_tokens_to_ids("<|return|>")


def test_gpt_oss_20b_preset_has_about_21b_parameters(tiny_tokenizer: Any) -> None:
    total = _parameter_count(model_config("gpt-oss-20b", tokenizer=tiny_tokenizer))
    # gpt-oss-20b: 20.9B parameters in total.
    assert 20.8e9 < total < 21.0e9, total
    two_layers = _parameter_count(model_config("gpt-oss-20b-2layer", tokenizer=tiny_tokenizer))
    hidden, width, experts, heads, kv_heads, head_dim = 2880, 2880, 32, 64, 8, 64
    per_layer = (
        experts * (hidden * 2 * width + 2 * width + width * hidden + hidden)  # fused experts
        + (experts * hidden + experts)  # router
        + hidden * heads * head_dim
        + heads * head_dim  # q
        + 2 * (hidden * kv_heads * head_dim + kv_heads * head_dim)  # k, v
        + heads * head_dim * hidden
        + hidden  # o
        + heads  # attention sinks
        + 2 * hidden  # the two RMSNorms
    )
    assert total - two_layers == 22 * per_layer


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose one of tiny"):
        model_config("huge")  # type: ignore[arg-type]
