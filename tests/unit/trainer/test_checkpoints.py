"""Local checkpoints: the commit protocol, manifests, verification and rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_trainer.storage.checkpoints import (
    INCOMPLETE_DIR,
    LocalArtifacts,
    steps_to_rotate_out,
)
from finetune_trainer.storage.manifest import (
    MANIFEST_NAME,
    ManifestError,
    read_manifest,
    sha256_file,
    verify_dir,
)


def write_fake_checkpoint(artifacts: LocalArtifacts, step: int, payload: bytes = b"") -> Path:
    """What Trainer would leave in the work directory: a few files, one nested."""
    written = artifacts.work_dir / f"checkpoint-{step}"
    (written / "sub").mkdir(parents=True)
    (written / "adapter_model.safetensors").write_bytes(payload or f"weights {step}".encode() * 50)
    (written / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (written / "sub" / "rng_state.pth").write_bytes(b"\x00\x01" * 10)
    return written


def commit(artifacts: LocalArtifacts, step: int, fingerprint: str = "fp") -> Path:
    written = write_fake_checkpoint(artifacts, step)
    artifacts.commit(
        written,
        f"checkpoint-{step}",
        kind="checkpoint",
        step=step,
        fingerprint=fingerprint,
        started_at="2026-01-01T00:00:00Z",
    )
    return artifacts.root / f"checkpoint-{step}"


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifacts:
    store = LocalArtifacts(tmp_path / "out")
    store.prepare()
    return store


def test_commit_moves_into_place_and_writes_a_complete_manifest(artifacts: LocalArtifacts) -> None:
    path = commit(artifacts, 10, fingerprint="abc123")

    assert path.is_dir()
    assert not (artifacts.work_dir / "checkpoint-10").exists()
    manifest = read_manifest(path)
    assert manifest.step == 10
    assert manifest.kind == "checkpoint"
    assert manifest.fingerprint == "abc123"
    listed = {f.path: f for f in manifest.files}
    assert set(listed) == {"adapter_model.safetensors", "trainer_state.json", "sub/rng_state.pth"}
    for rel, entry in listed.items():
        assert entry.size == (path / rel).stat().st_size
        assert entry.sha256 == sha256_file(path / rel)
    assert manifest.started_at == "2026-01-01T00:00:00Z"
    assert manifest.completed_at.endswith("Z")
    assert verify_dir(path) == manifest
    # No temporary files are left beside the manifest.
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_model.safetensors",
        MANIFEST_NAME,
        "sub",
        "trainer_state.json",
    ]


def test_flipped_byte_truncation_and_missing_manifest_are_detected(
    artifacts: LocalArtifacts,
) -> None:
    path = commit(artifacts, 5)
    weights = path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[7] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ManifestError, match=r"adapter_model\.safetensors does not match its sha256"
    ):
        verify_dir(path)
    # Sizes alone still match, so a size-only check passes.
    verify_dir(path, checksums=False)

    weights.write_bytes(bytes(data[:-3]))
    with pytest.raises(ManifestError, match=r"has \d+ bytes, the manifest says"):
        verify_dir(path, checksums=False)

    (path / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        verify_dir(path)
    assert artifacts.complete_checkpoints() == []


def test_recommitting_a_step_replaces_a_leftover(artifacts: LocalArtifacts) -> None:
    leftover = artifacts.root / "checkpoint-3"
    leftover.mkdir()
    (leftover / "junk").write_text("from a killed attempt")
    path = commit(artifacts, 3)
    assert not (path / "junk").exists()
    assert verify_dir(path).step == 3


def test_prepare_clears_half_written_work(artifacts: LocalArtifacts) -> None:
    write_fake_checkpoint(artifacts, 7)
    artifacts.prepare()
    assert list(artifacts.work_dir.iterdir()) == []
    assert [p.name for p in artifacts.root.iterdir()] == [INCOMPLETE_DIR]


def test_rotation_keeps_the_newest_complete_checkpoints(artifacts: LocalArtifacts) -> None:
    for step in (10, 20, 30, 40):
        commit(artifacts, step)
    # An incomplete checkpoint newer than every complete one (its write never finished)
    # and an older incomplete leftover.
    (artifacts.root / "checkpoint-50").mkdir()
    (artifacts.root / "checkpoint-15").mkdir()

    deleted = artifacts.rotate(2)

    assert sorted(deleted) == [10, 15, 20]
    remaining = sorted(c.step for c in artifacts.checkpoints())
    assert remaining == [30, 40, 50]
    assert [c.step for c in artifacts.complete_checkpoints()] == [40, 30]


def test_rotation_never_deletes_the_newest_complete_checkpoint(artifacts: LocalArtifacts) -> None:
    commit(artifacts, 10)
    commit(artifacts, 20)
    assert artifacts.rotate(0) == [10]  # a limit below one still keeps the newest
    assert [c.step for c in artifacts.complete_checkpoints()] == [20]
    assert artifacts.rotate(1, protect=frozenset({20})) == []


def test_rotation_after_a_commit_ignores_unusable_newer_leftovers(
    artifacts: LocalArtifacts,
) -> None:
    # An earlier attempt left checkpoint-40, which resume rejected (say a corrupt file), so
    # this attempt resumed from 20 and has just committed 30: 30 must survive.
    for step in (10, 20, 30, 40):
        commit(artifacts, step)
    assert sorted(artifacts.rotate(1, upto=30)) == [10, 20]
    assert sorted(c.step for c in artifacts.checkpoints()) == [30, 40]


def test_the_rotation_rule_shared_by_local_and_s3_output() -> None:
    # 10 and 30 complete, 20 incomplete, 40 complete but above the step just written.
    steps, complete = [10, 20, 30, 40], [10, 30, 40]
    assert steps_to_rotate_out(steps, complete, 1, upto=30) == [10, 20]
    assert steps_to_rotate_out(steps, complete, 2, upto=30) == [20]
    assert steps_to_rotate_out(steps, complete, 1, upto=30, protect={10}) == [20]
    assert steps_to_rotate_out(steps, complete, 0) == [10, 20, 30]  # keep at least one
    assert steps_to_rotate_out([5, 6], [], 1) == []  # nothing complete: nothing goes
