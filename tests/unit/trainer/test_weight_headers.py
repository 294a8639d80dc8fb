"""Reading a model's tensor names from its safetensors headers, for the dry run's check of
lora.targetModules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune_trainer.errors import InvalidConfig, InvalidModel
from finetune_trainer.sources import ModelSource
from finetune_trainer.weight_headers import (
    check_lora_targets,
    local_shapes,
    read_header,
    target_names,
)


def _local(path: Path) -> ModelSource:
    return ModelSource(str(path), None, True, f"model.path {path}")


def test_the_tiny_models_layers_are_read_without_loading_it(tiny_model_dir: Path) -> None:
    shapes = local_shapes(tiny_model_dir)
    assert shapes is not None
    present, adaptable = target_names(shapes)
    # Linear layers by their 2-D weights, the experts by their 3-D parameters.
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"} <= adaptable
    assert "embed_tokens" in present and "self_attn" in present
    assert "weight" not in adaptable and "layers" not in adaptable


def test_the_default_targets_pass_and_a_misspelt_one_is_named(tiny_model_dir: Path) -> None:
    default = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert check_lora_targets(default, _local(tiny_model_dir), None) is True
    with pytest.raises(InvalidConfig, match=r"lora.targetModules: v_prj match no layer") as info:
        check_lora_targets(["q_proj", "v_prj"], _local(tiny_model_dir), None)
    assert "the names this model has: " in str(info.value) and "o_proj" in str(info.value)


def test_a_directory_without_safetensors_is_left_unchecked(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    assert check_lora_targets(["anything"], _local(tmp_path), None) is False


@pytest.mark.parametrize(
    "content", [b"", b"\x05\0\0\0\0\0\0\0{bad}", b"\xff" * 8 + b"{}"], ids=["empty", "json", "len"]
)
def test_a_broken_safetensors_file_is_an_invalid_model(
    tiny_model_dir: Path, tmp_path: Path, content: bytes
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    broken = next(model.glob("*.safetensors"))
    broken.write_bytes(content)
    with pytest.raises(InvalidModel, match="is not a safetensors file"):
        read_header(broken)
