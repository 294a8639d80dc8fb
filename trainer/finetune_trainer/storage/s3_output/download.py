"""A checkpoint to resume from, made local from S3: its manifest read first, the objects
under its prefix checked against it before anything is downloaded, then downloaded
through a scratch directory and verified (a matching staged copy is used as it is)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoints import INCOMPLETE_DIR
from ..fsutil import remove_tree
from ..manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_FILES,
    Manifest,
    ManifestError,
    complete_manifest,
    verify_dir,
)
from ..paths import relative_name_problem
from ..s3 import ObjectTooLarge, UnsafeKey, is_not_found
from .staging import StagedCopies

log = logging.getLogger(__name__)


class CheckpointDownload:
    """Fetches checkpoints from ``staged.remote`` into the staging directory."""

    def __init__(self, staged: StagedCopies) -> None:
        self.staged = staged
        self.remote = staged.remote

    def fetch(self, name: str) -> tuple[Path, Manifest]:
        """The local copy of checkpoint ``name`` and its manifest; ManifestError when it is
        not usable (incomplete or corrupt on S3)."""
        store = self.remote.store
        try:
            raw = store.get_bytes(self.remote.key(name, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        except ObjectTooLarge as exc:
            raise ManifestError(str(exc)) from None
        if raw is None:
            raise ManifestError(f"no {MANIFEST_NAME} on S3 (the upload never finished)")
        remote = complete_manifest(raw)
        local = self.staged.path(name)
        try:
            if verify_dir(local) == remote:
                log.info("the staged copy of %s matches S3; not downloading it", name)
                return local, remote
        except ManifestError:
            pass
        self._check_listing(name, remote)
        scratch = self.staged.artifacts.root / INCOMPLETE_DIR / f"download-{name}"
        if scratch.exists():
            remove_tree(scratch)
        try:
            store.download_prefix(self.remote.key(name), scratch)
        except UnsafeKey as exc:
            raise ManifestError(str(exc)) from exc
        except Exception as exc:
            # Listed, then gone before it was read: rotated out or being uploaded again
            # by another writer. Either way this checkpoint is not whole; try an older one.
            if is_not_found(exc):
                raise ManifestError("an object disappeared during the download") from exc
            raise
        manifest = verify_dir(scratch)
        if manifest != remote:
            raise ManifestError("the downloaded manifest differs from the one listed")
        if local.exists() or local.is_symlink():
            remove_tree(local)
        scratch.rename(local)
        return local, manifest

    def _check_listing(self, name: str, manifest: Manifest) -> None:
        """Before anything is downloaded: the objects under the checkpoint's prefix must be
        exactly the manifest's files (and the manifest), each a safe name of the size
        listed, so the download writes nothing the manifest did not promise."""
        prefix = self.remote.key(name) + "/"
        try:
            listed = self.remote.store.list_sizes(prefix, MAX_MANIFEST_FILES + 1)
        except ObjectTooLarge as exc:
            raise ManifestError(str(exc)) from None
        present: dict[str, int] = {}
        for key, size in listed.items():
            rel = key[len(prefix) :]
            if rel.endswith("/"):
                continue  # a "directory" marker some tools write
            problem = relative_name_problem(rel)
            if problem is not None:
                raise ManifestError(f"the S3 key {key} {problem}")
            present[rel] = size
        expected = {entry.path: entry.size for entry in manifest.files}
        missing = sorted(set(expected) - set(present))
        extra = sorted(set(present) - set(expected) - {MANIFEST_NAME})
        if missing:
            raise ManifestError(f"{missing[0]} is not on S3")
        if extra:
            raise ManifestError(f"{prefix}{extra[0]} is on S3 but not in the manifest")
        for rel, size in sorted(expected.items()):
            if present[rel] != size:
                raise ManifestError(
                    f"{rel} has {present[rel]} bytes on S3, the manifest says {size}"
                )
