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
    runtime.remove_own_scratch(succeeded=False)  # nothing staged: nothing worth keeping
    assert not scratch.exists()
    runtime.remove_own_scratch(succeeded=True)  # a second call is harmless


def test_a_given_scratch_directory_is_left_alone(tmp_path: Path) -> None:
    given = tmp_path / "scratch"
    runtime = RuntimeOptions(scratch_dir=given)
    assert runtime.scratch() == given and given.is_dir()
    (given / "keep").write_text("x")
    runtime.remove_own_scratch(succeeded=True)
    assert (given / "keep").exists()


def test_output_staged_but_not_uploaded_survives_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr("finetune_trainer.runtime.SCRATCH_DIR", str(tmp_path / "no-pod-mount"))
    runtime = RuntimeOptions()
    staged = runtime.scratch() / OUTPUT_STAGING / "bucket" / "checkpoint-10"
    staged.mkdir(parents=True)
    runtime.remove_own_scratch(succeeded=False)
    assert staged.is_dir()
    assert "holds staged output that was not uploaded" in caplog.text
    runtime.remove_own_scratch(succeeded=True)  # once it succeeded, all of it is done with
    assert not staged.exists() and list(tmp_path.iterdir()) == []
