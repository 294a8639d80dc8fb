"""The local staging directory of an S3 output: each artifact is committed there first and
its copy stays until S3 holds it. Also finds what an earlier container staged but never
uploaded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from ..checkpoints import LocalArtifacts
from ..fsutil import remove_tree
from ..manifest import MANIFEST_NAME, Manifest, ManifestError, verify_dir
from .prefix import OutputPrefix

log = logging.getLogger(__name__)


class StagedCopies:
    """The staged copies in ``artifacts``, for the artifacts under ``remote``."""

    def __init__(self, artifacts: LocalArtifacts, remote: OutputPrefix) -> None:
        self.artifacts = artifacts
        self.remote = remote

    def path(self, name: str) -> Path:
        return self.artifacts.root / name

    def remove(self, name: str) -> None:
        remove_tree(self.path(name))

    def leftovers(self) -> Iterator[tuple[str, Manifest]]:
        """Complete checkpoints a previous container staged but did not get to upload,
        oldest first; each is looked for on S3 only once the one before it was handled.
        Each is verified first (sizes and checksums): the container may have been killed
        while the disk was failing, and a corrupt upload would only be found at resume."""
        for checkpoint in reversed(self.artifacts.complete_checkpoints()):
            name = checkpoint.path.name
            if self.remote.store.head_etag(self.remote.key(name, MANIFEST_NAME)) is not None:
                continue
            try:
                manifest = verify_dir(checkpoint.path)
            except (ManifestError, OSError) as exc:
                log.warning(
                    "not uploading %s, staged by a previous attempt: it does not verify (%s)",
                    name,
                    exc,
                )
                continue
            log.info("uploading %s, staged by a previous attempt but never uploaded", name)
            yield name, manifest

    def discard_older_than(self, uploaded_step: int) -> None:
        """After the upload of checkpoint ``uploaded_step``: everything older is safely on
        S3, and the newest one stays staged for a fast resume."""
        for checkpoint in self.artifacts.checkpoints():
            if checkpoint.step < uploaded_step:
                remove_tree(checkpoint.path)
