"""Session fixtures for the trainer's tests: the tiny gpt-oss model and the
Multilingual-Thinking-shaped dataset, generated once per test session (never committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.fixtures import write_tiny_dataset, write_tiny_model

TINY_DATASET_ROWS = 64


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny gpt-oss model directory (config, safetensors, harmony tokenizer), seed 0.
    Shared by the whole session: copy it before changing anything inside."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's tokenizer, loaded with AutoTokenizer. Shared: do not mutate it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON Lines file of 64 Multilingual-Thinking-shaped rows (seed 0, five languages)."""
    return write_tiny_dataset(
        tmp_path_factory.mktemp("tiny-dataset") / "train.jsonl", rows=TINY_DATASET_ROWS, seed=0
    )
