"""Checkpoints and final artifacts in a local (or PVC) directory, laid out as the original
example did: ``<root>/checkpoint-<step>/``, ``<root>/final_model/``, ``<root>/merged_16bit/``.

The training loop writes each artifact under ``<root>/.incomplete/``; :meth:`commit` then
fsyncs it, renames it into place, fsyncs the parent, and writes ``manifest.json`` last. A
directory without a valid manifest is incomplete and never resumed from.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .fsutil import fsync_dir, fsync_tree, remove_tree
from .manifest import (
    ArtifactKind,
    Manifest,
    ManifestError,
    build_manifest,
    read_manifest,
    verify_dir,
    write_manifest,
)

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
FINAL_MODEL_DIR = "final_model"
MERGED_16BIT_DIR = "merged_16bit"
INCOMPLETE_DIR = ".incomplete"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def parse_checkpoint_name(name: str) -> int | None:
    match = _CHECKPOINT_RE.match(name)
    return int(match.group(1)) if match else None


def steps_to_rotate_out(
    steps: Iterable[int],
    complete: Iterable[int],
    keep: int,
    *,
    upto: int | None = None,
    protect: Iterable[int] = (),
) -> list[int]:
    """The checkpoint steps rotation deletes, for local and S3 output alike: all but the
    ``keep`` newest complete checkpoints (at least one, so the newest complete checkpoint
    always survives) and the ``protect``ed steps, among those older than the newest
    complete one -- incomplete leftovers included. Complete checkpoints above ``upto``
    (the step just written) are left over from an earlier attempt that could not resume
    from them (a corrupt file, say): counting them as newest would rotate out the
    checkpoint just written, so they are neither counted nor deleted."""
    counted = sorted((s for s in complete if upto is None or s <= upto), reverse=True)
    if not counted:
        return []
    newest = counted[0]
    kept = set(counted[: max(1, keep)]) | set(protect)
    return [s for s in steps if s not in kept and s < newest]


@dataclass(frozen=True)
class LocalCheckpoint:
    step: int
    path: Path

    def manifest(self) -> Manifest | None:
        """The parsed manifest, or None when the checkpoint is incomplete (no manifest, or
        one that lists too little) or is not a directory of its own."""
        if self.path.is_symlink():
            return None
        try:
            return read_manifest(self.path)
        except ManifestError:
            return None


class LocalArtifacts:
    """The artifacts in one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def work_dir(self) -> Path:
        """Where artifacts are written before they are committed."""
        return self.root / INCOMPLETE_DIR

    def prepare(self) -> None:
        """Create the directory and clear what a previous, killed attempt left half-written."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.work_dir.exists():
            log.info("removing half-written artifacts from a previous attempt in %s", self.work_dir)
            remove_tree(self.work_dir)
        for leftover in self.root.glob(".deleting-*"):
            remove_tree(leftover)
        self.work_dir.mkdir()

    def clear_work_dir(self) -> None:
        """Remove what is left in the work directory (e.g. the model card TRL writes there
        beside each checkpoint) once nothing more will be committed from it."""
        if not self.work_dir.is_dir():
            return
        for entry in self.work_dir.iterdir():
            if entry.is_dir():
                remove_tree(entry)
            else:
                entry.unlink()

    def checkpoints(self) -> list[LocalCheckpoint]:
        """Every checkpoint-N directory, complete or not, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            step = parse_checkpoint_name(entry.name)
            if step is not None and entry.is_dir():
                found.append(LocalCheckpoint(step, entry))
        return sorted(found, key=lambda c: c.step, reverse=True)

    def complete_checkpoints(self) -> list[LocalCheckpoint]:
        """Checkpoints with a readable manifest (checksums not verified), newest first."""
        return [c for c in self.checkpoints() if c.manifest() is not None]

    def commit(
        self,
        written: Path,
        name: str,
        *,
        kind: ArtifactKind,
        step: int,
        fingerprint: str,
        started_at: str,
    ) -> Manifest:
        """Make ``written`` (a directory under :attr:`work_dir`) the complete artifact
        ``<root>/<name>``: fsync its files, hash them, rename it into place replacing any
        previous (incomplete or superseded) copy, fsync the parent, write the manifest."""
        fsync_tree(written)
        manifest = build_manifest(
            written, kind=kind, step=step, fingerprint=fingerprint, started_at=started_at
        )
        target = self.root / name
        if target.exists():
            log.info("replacing the existing %s", target)
            remove_tree(target)
        os.replace(written, target)
        fsync_dir(self.root)
        write_manifest(target, manifest)
        return manifest

    def verified(self, name: str, *, checksums: bool = True) -> Manifest | None:
        """The manifest of artifact ``name`` when it is complete and its files (sizes, and
        with ``checksums`` their sha256) match it."""
        path = self.root / name
        if not path.is_dir():
            return None
        try:
            return verify_dir(path, checksums=checksums)
        except ManifestError:
            return None

    def rotate(
        self, keep: int, *, protect: frozenset[int] = frozenset(), upto: int | None = None
    ) -> list[int]:
        """Keep the ``keep`` newest complete checkpoints (at least one, so the newest
        complete checkpoint always survives) plus the steps in ``protect``; delete the
        older complete ones and any incomplete leftovers older than the newest complete one.

        ``upto`` is the step just committed: checkpoints above it are left over from an
        earlier attempt that could not resume from them (say a corrupt file), so they are
        neither counted as newest nor deleted here -- counting them would rotate out the
        checkpoint just written. Returns the deleted steps."""
        present = {c.step: c.path for c in self.checkpoints()}
        complete = [c.step for c in self.complete_checkpoints()]
        deleted = steps_to_rotate_out(present, complete, keep, upto=upto, protect=protect)
        for step in deleted:
            log.info("rotating out %s (saveTotalLimit=%d)", present[step].name, max(1, keep))
            remove_tree(present[step])
        return deleted
