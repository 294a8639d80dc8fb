"""How the trainer names a model's revision: the Hub commit of the snapshot in the Hub
cache, or a digest of a local model's config and every byte of its weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants

from finetune_trainer.provenance import hub_commit, local_model_digest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hub cache holding org/model's snapshot of COMMIT as `main` and as tag `v1`, laid
    out as huggingface_hub lays it out (refs name commits; snapshots hold the files)."""
    repo = tmp_path / "models--org--model"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "tokenizer_config.json").write_text("{}")
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_a_hub_branch_or_tag_resolves_to_the_commit_loaded(hub_cache: Path) -> None:
    assert hub_commit("org/model", None) == COMMIT
    assert hub_commit("org/model", "v1") == COMMIT
    assert hub_commit("org/model", "v2") is None  # never loaded
    assert hub_commit("org/other", None) is None


def test_a_commit_is_its_own_revision(hub_cache: Path) -> None:
    other = "f" * 40
    assert hub_commit("org/model", other) == other


def test_a_local_model_digest_covers_every_weight_byte(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    digest = local_model_digest(copy)
    assert digest == local_model_digest(tiny_model_dir)
    # A tokenizer change is not the model's (the rows' digest covers what it tokenized).
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")
    assert local_model_digest(copy) == digest
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last weight's last byte: the header is unchanged
    weights.write_bytes(bytes(data))
    assert local_model_digest(copy) != digest
