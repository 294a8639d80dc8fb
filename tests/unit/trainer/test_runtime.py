"""Where the trainer keeps scratch files, and that it cleans up only what it created."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_trainer.runtime import OUTPUT_STAGING, RuntimeOptions


def test_a_temporary_scratch_is_created_once_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.setattr("finetune_trainer.runtime.SCRATCH_DIR", str(tmp_path / "no-pod-mount"))
    runtime = RuntimeOptions()
    scratch = runtime.scratch()
    assert scratch.parent == tmp_path and scratch.name.startswith("finetune-scratch-")
    (scratch / "datasets-cache").mkdir()
    assert runtime.scratch() == scratch  # one directory per run
    runtime.remove_own_scratch()
    assert not scratch.exists()
    runtime.remove_own_scratch()  # a second call is harmless


def test_a_given_scratch_directory_is_left_alone(tmp_path: Path) -> None:
    given = tmp_path / "scratch"
    runtime = RuntimeOptions(scratch_dir=given)
    assert runtime.scratch() == given and given.is_dir()
    (given / "keep").write_text("x")
    runtime.remove_own_scratch()
    assert (given / "keep").exists()


def test_output_that_was_not_published_keeps_the_temporary_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr("finetune_trainer.runtime.SCRATCH_DIR", str(tmp_path / "no-pod-mount"))
    runtime = RuntimeOptions()
    staged = runtime.scratch() / OUTPUT_STAGING / "bucket" / "checkpoint-10"
    staged.mkdir(parents=True)
    runtime.keep_scratch = True  # what the run sets when publishing failed
    runtime.remove_own_scratch()
    assert staged.is_dir()
    assert "holds staged output that was not published" in caplog.text
