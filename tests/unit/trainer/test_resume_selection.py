"""Choosing the checkpoint to resume from: newest verified one, fallbacks, fingerprints."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.errors import IncompatibleCheckpoint, InvalidConfig, InvalidInput
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


def test_a_checkpoint_from_a_trainer_before_the_memory_plan_resumes(target: LocalTarget) -> None:
    # Fingerprints that trainers up to 8d2641a gave these configs, which then counted
    # gradientCheckpointing (default unsloth) and offloadEmbedding (default true).
    older = {
        "969659f5256afadf": TrainerConfig(),
        "ff90c57b713e13f4": TrainerConfig.from_mapping(
            {
                "model": {"offloadEmbedding": False},
                "training": {"gradientCheckpointing": "off", "maxSteps": 7},
            }
        ),
    }
    for step, (written_by_older, config) in enumerate(older.items(), start=1):
        assert config.legacy_fingerprint() == written_by_older
        assert config.fingerprint() != written_by_older
        commit(target.artifacts, step * 10, fingerprint=written_by_older)
        found = find_resume_point(target, config.fingerprint(), {config.legacy_fingerprint()})
        assert found is not None and found.step == step * 10
        with pytest.raises(IncompatibleCheckpoint):
            find_resume_point(target, config.fingerprint())


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


def test_a_checkpoint_the_trainer_may_not_read_is_a_config_error_not_a_retry(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root passes every permission check, so the refusal is raised as the kernel would.
    def refused() -> tuple[Path, Manifest]:
        raise PermissionError(errno.EACCES, "Permission denied", "/outputs/checkpoint-20")

    monkeypatch.setattr(
        target, "resume_candidates", lambda: iter([ResumeCandidate(20, "pvc://o/c-20", refused)])
    )
    with pytest.raises(InvalidConfig, match="output pvc://o/c-20: the trainer may not") as info:
        find_resume_point(target, "fp")
    assert "/outputs/checkpoint-20 (Permission denied)" in str(info.value)
    assert "fsGroup" in str(info.value)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_output_directory_the_trainer_may_not_write_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = LocalTarget(tmp_path / "out", "pvc://outputs/run")

    def refused() -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / "out"))

    monkeypatch.setattr(target.artifacts, "prepare", refused)
    with pytest.raises(InvalidConfig, match="output pvc://outputs/run: the trainer may not"):
        target.prepare()


def test_other_io_errors_preparing_the_output_stay_retryable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = LocalTarget(tmp_path / "out", "pvc://outputs/run")

    def failing() -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(target.artifacts, "prepare", failing)
    with pytest.raises(OSError, match="Input/output error") as info:
        target.prepare()
    assert not isinstance(info.value, InvalidConfig)
