"""Choosing the checkpoint to resume from: newest verified one, fallbacks, fingerprints."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_trainer.errors import IncompatibleCheckpoint, InvalidInput
from finetune_trainer.resume import CheckpointUnreadable, find_resume_point
from finetune_trainer.storage.manifest import Manifest
from finetune_trainer.storage.targets import LocalTarget, ResumeCandidate

from .test_checkpoints import commit


@pytest.fixture
def target(tmp_path: Path) -> LocalTarget:
    root = tmp_path / "out"
    t = LocalTarget(root, str(root))
    t.prepare()
    return t


def test_no_checkpoint_means_a_fresh_start(target: LocalTarget) -> None:
    assert find_resume_point(target, "fp") is None


def test_newest_complete_checkpoint_wins(
    target: LocalTarget, caplog: pytest.LogCaptureFixture
) -> None:
    commit(target.artifacts, 10)
    commit(target.artifacts, 20)
    caplog.set_level(logging.INFO)
    point = find_resume_point(target, "fp")
    assert point is not None
    assert point.step == 20
    assert point.path == target.artifacts.root / "checkpoint-20"
    assert "resuming from checkpoint-20 (step 20)" in caplog.text


def test_corrupt_newest_falls_back_with_a_logged_reason(
    target: LocalTarget, caplog: pytest.LogCaptureFixture
) -> None:
    commit(target.artifacts, 10)
    newest = commit(target.artifacts, 20)
    weights = newest / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01
    weights.write_bytes(bytes(data))
    (target.artifacts.root / "checkpoint-30").mkdir()  # incomplete: no manifest

    point = find_resume_point(target, "fp")

    assert point is not None and point.step == 10
    assert "checkpoint-30 is not usable: no manifest.json" in caplog.text
    assert "checkpoint-20 is not usable: adapter_model.safetensors does not match" in caplog.text
    assert "falling back to the previous checkpoint" in caplog.text


def test_all_unusable_restarts_loudly(
    target: LocalTarget, caplog: pytest.LogCaptureFixture
) -> None:
    (target.artifacts.root / "checkpoint-10").mkdir()
    assert find_resume_point(target, "fp") is None
    assert "none of the 1 checkpoints found is usable" in caplog.text


def test_a_different_fingerprint_is_refused(target: LocalTarget) -> None:
    commit(target.artifacts, 10, fingerprint="other")
    with pytest.raises(IncompatibleCheckpoint, match="new output path") as info:
        find_resume_point(target, "mine")
    assert isinstance(info.value, InvalidInput)
    assert info.value.reason == "IncompatibleCheckpoint"


def test_a_checkpoint_that_cannot_be_read_now_fails_the_attempt_instead_of_falling_back(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(target.artifacts, 10)
    commit(target.artifacts, 20)
    older = list(target.resume_candidates())[1]

    def unreadable() -> tuple[Path, Manifest]:
        raise OSError(errno.EIO, "Input/output error")

    def candidates() -> Iterator[ResumeCandidate]:
        yield ResumeCandidate(20, "pvc://out/checkpoint-20", unreadable)
        yield older

    monkeypatch.setattr(target, "resume_candidates", candidates)
    with pytest.raises(CheckpointUnreadable, match="checkpoint-20 at pvc://out/checkpoint-20"):
        find_resume_point(target, "fp")
