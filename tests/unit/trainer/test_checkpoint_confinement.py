"""Checkpoints are confined: whoever can write the output location can write a manifest
too, so resume trusts one only as far as it is checked. An entry that is absolute, holds
'..', is a symbolic link (to /dev/zero, to a file elsewhere), a FIFO, or a file in a
directory that links elsewhere makes its checkpoint invalid; so does a file present but
not listed or listed but missing, and a manifest that lists too little. Resume then falls
back to the next older complete checkpoint, logging why, and never hangs reading."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.resume import find_resume_point
from finetune_trainer.storage.checkpoints import LocalArtifacts
from finetune_trainer.storage.manifest import (
    MANIFEST_NAME,
    ManifestError,
    parse_manifest,
    verify_dir,
)
from finetune_trainer.storage.targets import LocalTarget

from .test_checkpoints import commit

pytestmark = pytest.mark.timeout(60)  # a read that blocks would hang here, not pass


@pytest.fixture
def target(tmp_path: Path) -> LocalTarget:
    root = tmp_path / "out"
    local = LocalTarget(root, str(root))
    local.prepare()
    return local


def edit_manifest(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((path / MANIFEST_NAME).read_text())
    change(data)
    (path / MANIFEST_NAME).write_text(json.dumps(data))


def entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in data["files"] if f["path"] == name)


def rename_entry(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        entry(data, old)["path"] = new

    return change


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def as_empty(name: str) -> Callable[[dict[str, Any]], None]:
    """List ``name`` as an empty file: /dev/zero's size, so a size check alone passes it
    and hashing it would never end."""

    def change(data: dict[str, Any]) -> None:
        entry(data, name).update(size=0, sha256=EMPTY_SHA256)

    return change


def link_to(target_path: str) -> Callable[[Path], None]:
    """Replace the adapter weights with a symbolic link; the manifest lists them with the
    size the link's target reports."""

    def tamper(path: Path) -> None:
        weights = path / "adapter_model.safetensors"
        weights.unlink()
        weights.symlink_to(target_path)
        size = os.stat(target_path).st_size
        edit_manifest(path, lambda d: entry(d, "adapter_model.safetensors").update(size=size))

    return tamper


def zero_entry(path: Path) -> None:
    edit_manifest(path, as_empty("adapter_model.safetensors"))
    edit_manifest(path, rename_entry("adapter_model.safetensors", "/dev/zero"))


def fifo(path: Path) -> None:
    weights = path / "adapter_model.safetensors"
    weights.unlink()
    os.mkfifo(weights)
    edit_manifest(path, as_empty("adapter_model.safetensors"))


def linked_directory(path: Path) -> None:
    elsewhere = path.parent.parent / "elsewhere"
    elsewhere.mkdir()
    (path / "sub").rename(elsewhere / "sub")
    (path / "sub").symlink_to(elsewhere / "sub")


def extra_file(path: Path) -> None:
    (path / "payload.py").write_text("import os\n")


def missing_file(path: Path) -> None:
    (path / "trainer_state.json").unlink()


def manifest_link(path: Path) -> None:
    (path / MANIFEST_NAME).unlink()
    (path / MANIFEST_NAME).symlink_to("/dev/zero")


TAMPERING = {
    "absolute entry /dev/zero": (zero_entry, "entry '/dev/zero' is an absolute path"),
    "'..' entry": (
        lambda p: edit_manifest(p, rename_entry("trainer_state.json", "../checkpoint-10/x")),
        "entry '../checkpoint-10/x' has a '..' segment",
    ),
    "'.' entry": (
        lambda p: edit_manifest(p, rename_entry("trainer_state.json", "./trainer_state.json")),
        "has an empty or '.' segment",
    ),
    "symlink to /dev/zero": (link_to("/dev/zero"), "adapter_model.safetensors is a symbolic link"),
    "symlink outside": (link_to("/etc/hostname"), "adapter_model.safetensors is a symbolic link"),
    "FIFO": (fifo, "adapter_model.safetensors is not a regular file"),
    "directory linked elsewhere": (linked_directory, "sub is a symbolic link"),
    "file not listed": (extra_file, "payload.py is not in the manifest"),
    "listed file missing": (missing_file, "trainer_state.json is missing"),
    "manifest linked to /dev/zero": (manifest_link, "manifest.json is a symbolic link"),
    "empty manifest": (
        lambda p: edit_manifest(p, lambda d: d.update(files=[])),
        "incomplete: its manifest lists no files",
    ),
    "no adapter weights": (
        lambda p: edit_manifest(
            p, lambda d: d.update(files=[f for f in d["files"] if "adapter" not in f["path"]])
        ),
        "incomplete: its manifest lists no adapter weights",
    ),
    "no trainer state": (
        lambda p: edit_manifest(
            p, lambda d: d.update(files=[f for f in d["files"] if "trainer_state" not in f["path"]])
        ),
        "incomplete: its manifest lists no trainer state (trainer_state.json)",
    ),
    "entry listed twice": (
        lambda p: edit_manifest(p, lambda d: d["files"].append(dict(d["files"][0]))),
        "is listed twice",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_tampered_checkpoint_is_skipped_for_the_previous_one(
    target: LocalTarget, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    tamper, why = TAMPERING[case]
    commit(target.artifacts, 10)
    tamper(commit(target.artifacts, 20))
    point = find_resume_point(target, "fp")
    assert point is not None and point.step == 10
    assert "checkpoint-20 is not usable: " in caplog.text
    assert why in caplog.text, caplog.text
    assert "falling back to the previous checkpoint" in caplog.text


def test_a_checkpoint_directory_that_is_a_link_is_not_one(
    target: LocalTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commit(target.artifacts, 10)
    other = LocalArtifacts(tmp_path / "other")
    other.prepare()
    (target.artifacts.root / "checkpoint-20").symlink_to(commit(other, 20))
    point = find_resume_point(target, "fp")
    assert point is not None and point.step == 10
    assert "checkpoint-20 is not usable: checkpoint-20 is not a directory" in caplog.text
    # Nor does it count as complete, for rotation; rotating removes the link, not its target.
    assert [c.step for c in target.artifacts.complete_checkpoints()] == [10]
    commit(target.artifacts, 30)
    target.artifacts.rotate(1, upto=30)
    assert not (target.artifacts.root / "checkpoint-20").is_symlink()
    assert verify_dir(other.root / "checkpoint-20").step == 20


def test_reading_never_follows_a_link_even_for_sizes_only(target: LocalTarget) -> None:
    """The final adapter's existence is checked with sizes only: a link still fails it."""
    path = commit(target.artifacts, 20)
    link_to("/dev/zero")(path)
    with pytest.raises(ManifestError, match="is a symbolic link"):
        verify_dir(path, checksums=False)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"files": [{"path": "a", "size": -1, "sha256": "0" * 64}]}, "greater than or equal"),
        ({"files": [{"path": "a", "size": 1, "sha256": "zz"}]}, "should match pattern"),
        ({"files": [{"path": "a\x00b", "size": 1, "sha256": "0" * 64}]}, "NUL"),
        ({"files": [{"path": "a\\..\\b", "size": 1, "sha256": "0" * 64}]}, "backslash"),
        ({"files": [{"path": MANIFEST_NAME, "size": 1, "sha256": "0" * 64}]}, "the manifest"),
    ],
)
def test_manifest_entries_are_checked_when_parsed(data: dict[str, Any], problem: str) -> None:
    manifest = {
        "kind": "checkpoint",
        "step": 1,
        "fingerprint": "fp",
        "started_at": "x",
        "completed_at": "y",
        **data,
    }
    with pytest.raises(ManifestError, match="is not a valid manifest") as caught:
        parse_manifest(json.dumps(manifest))
    assert problem in str(caught.value)


def test_an_oversized_manifest_is_not_read(target: LocalTarget) -> None:
    path = commit(target.artifacts, 20)
    with open(path / MANIFEST_NAME, "ab") as handle:
        handle.truncate(17 * 1024 * 1024)
    with pytest.raises(ManifestError, match="larger than"):
        verify_dir(path)
