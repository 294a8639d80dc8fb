"""A local model directory is checked before anything loads from it: each missing part is
named with the field and the fix (exit 78), in training and in --dry-run alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune_api.config import ModelSpec
from finetune_trainer.errors import InvalidInput
from finetune_trainer.sources import resolve_model


def copy_without(tiny_model_dir: Path, tmp_path: Path, *patterns: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for pattern in patterns:
        for path in model.glob(pattern):
            path.unlink()
    return model


def test_a_complete_directory_resolves(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = resolve_model(ModelSpec(path=str(tiny_model_dir)), tmp_path)
    assert source.name_or_path == str(tiny_model_dir) and source.is_local


@pytest.mark.parametrize(
    "removed, problem",
    [
        (("config.json",), "has no config.json"),
        (("tokenizer*",), "has no tokenizer"),
        (("*.safetensors", "*.bin"), "has no weights"),
    ],
)
def test_a_missing_part_is_named(
    tiny_model_dir: Path, tmp_path: Path, removed: tuple[str, ...], problem: str
) -> None:
    model = copy_without(tiny_model_dir, tmp_path, *removed)
    with pytest.raises(InvalidInput, match=problem) as error:
        resolve_model(ModelSpec(path=str(model)), tmp_path)
    assert str(error.value).startswith(f"model.path {model}")
