"""Where a run's artifacts go: a local/PVC directory, or an S3 prefix staged through a local
directory. Both expose the same operations to the training loop and to resume:

- ``artifacts``: the local directory the loop writes and commits into;
- ``published(name, manifest, on_durable)``: called after each local commit (S3: upload
  it); ``on_durable`` runs once the artifact is safe at its destination (local: at once;
  S3: from the upload thread, after the upload and, for a checkpoint, the ``latest``
  pointer);
- ``flush()``: wait for the uploads, raising for one that failed and that nothing
  uploaded since made up for; ``unpublished_output`` says such output remains staged;
- ``resume_candidates()``: checkpoints, newest first, each fetched and verified on demand;
- ``uri(name)``: how status and the termination message name an artifact.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputInUse, output_access
from .checkpoints import (
    CHECKPOINT_PREFIX,
    FINAL_MODEL_DIR,
    MERGED_16BIT_DIR,
    LocalArtifacts,
    checkpoint_name,
)
from .lease import LEASE_NAME, DirectoryLease, LeaseLapsed, LeaseStore, OutputLease, S3Lease
from .manifest import Manifest, ManifestError, read_manifest, verify_dir
from .s3 import S3Store
from .s3_output.download import CheckpointDownload
from .s3_output.latest import LATEST_POINTER, LatestPointer
from .s3_output.prefix import OutputPrefix
from .s3_output.rotation import CheckpointRotation
from .s3_output.staging import StagedCopies
from .s3_output.transfer import Deadline, OnDurable, UploadFailed, UploadQueue, upload_artifact

log = logging.getLogger(__name__)

FINAL_ARTIFACTS = (FINAL_MODEL_DIR, MERGED_16BIT_DIR)


@dataclass(frozen=True)
class ResumeCandidate:
    """A checkpoint that may be resumed from; ``fetch`` makes it local and verifies it,
    raising ManifestError with the reason when it is not usable (incomplete or corrupt), or
    OSError when it could not be read just now."""

    step: int
    uri: str
    fetch: Callable[[], tuple[Path, Manifest]]


class OutputTarget:
    """Base: a local directory that is also the final destination."""

    def __init__(self, root: Path, uri_base: str, save_total_limit: int | None = None) -> None:
        self.artifacts = LocalArtifacts(root)
        self.uri_base = uri_base.rstrip("/")
        self.save_total_limit = save_total_limit

    def describe(self) -> str:
        return self.uri_base

    def uri(self, name: str) -> str:
        return f"{self.uri_base}/{name}"

    def check_access(self) -> None:
        """Refuse credentials that cannot write the destination, before anything else
        there is read or written (a directory's permissions show at its first write)."""

    def prepare(self) -> None:
        with output_access(f"output {self.uri_base}"):
            self.artifacts.prepare()

    def published(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        """An artifact was committed locally. For a local target it is already final."""
        if on_durable is not None:
            on_durable()
        if manifest.kind == "checkpoint" and self.save_total_limit is not None:
            self.artifacts.rotate(self.save_total_limit, upto=manifest.step)

    # Set by the run: until when (monotonic) to hold the exit for uploads that failed;
    # None: report them at once.
    hold_uploads: Deadline | None = None
    # Set by the run: the lease it holds on this output (storage/lease.py).
    lease: OutputLease | None = None

    def ensure_owned(self) -> None:
        """Before an artifact is committed: refuse (OutputInUse) when another trainer took
        the output's lease over meanwhile (this one stalled past its expiry, say), rather
        than overwrite what that trainer writes."""
        if self.lease is not None and self.lease.lost is not None:
            raise OutputInUse(
                f"{self.lease.lost}; this trainer stopped writing {self.uri_base} rather than "
                "overwrite another run's output"
            )

    def flush(self) -> None:
        """Wait until every published artifact reached its destination; raise if one
        could not."""

    def committed(self, name: str, manifest: Manifest) -> str:
        """What a log line may truthfully say of an artifact just committed and published:
        here it is at its destination."""
        return f"{name} complete: {len(manifest.files)} files -> {self.uri(name)}"

    def lost_output(self) -> str | None:
        """Which committed output never reached its destination and why, or None."""
        return None

    @property
    def unpublished_output(self) -> bool:
        """Whether committed output never reached its destination, with nothing published
        since to make up for it: its local copy may be the only one."""
        return False

    def close(self) -> None:
        """Release resources; pending uploads are finished first."""
        self.flush()

    def resume_candidates(self) -> Iterator[ResumeCandidate]:
        for checkpoint in self.artifacts.checkpoints():

            def fetch(path: Path = checkpoint.path) -> tuple[Path, Manifest]:
                return path, verify_dir(path)

            yield ResumeCandidate(checkpoint.step, self.uri(checkpoint.path.name), fetch)

    def artifact_manifest(self, name: str) -> Manifest | None:
        """The manifest of a final artifact (final_model, merged_16bit) when a complete one
        is already there (sizes checked; checksums are for resume, where they matter)."""
        return self.artifacts.verified(name, checksums=False)

    def complete_artifacts(self) -> Iterator[tuple[str, Manifest]]:
        """Every artifact at the destination with a manifest complete for its kind (files
        not checked), by name: the checkpoints newest first, then the final ones."""
        for checkpoint in self.artifacts.checkpoints():
            manifest = checkpoint.manifest()
            if manifest is not None:
                yield checkpoint.path.name, manifest
        for name in FINAL_ARTIFACTS:
            path = self.artifacts.root / name
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(ManifestError):
                    yield name, read_manifest(path)

    def lease_store(self) -> LeaseStore:
        """Where the output's lease lives (storage/lease.py)."""
        return DirectoryLease(self.artifacts.root / LEASE_NAME, self.uri(LEASE_NAME))


class LocalTarget(OutputTarget):
    """output.path or output.pvc: artifacts are final once committed."""


class S3Target(OutputTarget):
    """output.s3: artifacts are committed in a local staging directory, then uploaded in
    the background (one at a time, in order) under ``<prefix>/<name>/`` with the manifest
    last; for checkpoints the ``<prefix>/latest`` pointer then moves. A staging copy is
    deleted only after its upload succeeded (the newest one is kept for a fast resume).

    The parts: ``remote`` (the output prefix), ``staged`` (the staging directory),
    ``uploads`` (the background uploads and their failures: s3_output.transfer),
    ``rotation`` (saveTotalLimit on S3), ``latest`` (the pointer) and ``downloads`` (a
    checkpoint fetched for resume)."""

    def __init__(
        self,
        store: S3Store,
        prefix: str,
        staging: Path,
        save_total_limit: int | None = None,
    ) -> None:
        self.remote = OutputPrefix(store, prefix)
        super().__init__(staging, self.remote.uri_base, save_total_limit)
        self.store = store
        self.prefix = prefix
        self.staged = StagedCopies(self.artifacts, self.remote)
        self.latest = LatestPointer(self.remote)
        self.rotation = CheckpointRotation(self.remote, save_total_limit)
        self.downloads = CheckpointDownload(self.staged)
        self.uploads = UploadQueue(self._upload, self.remote, self.staged)
        self._access_checked = False

    def describe(self) -> str:
        return f"{self.uri_base} (staged in {self.artifacts.root})"

    # --- publishing ------------------------------------------------------------------------
    def check_access(self) -> None:
        # Credentials that may list and read but not write would otherwise only fail at
        # the first upload, after the model load and the first checkpoint's GPU time.
        self.store.check_writable(self.prefix)
        self._access_checked = True

    def prepare(self) -> None:
        super().prepare()
        if not self._access_checked:
            self.check_access()
        for name, manifest in self.staged.leftovers():
            self._upload(name, manifest)

    def published(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        self.uploads.submit(name, manifest, on_durable)

    def _upload(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        """One artifact to S3, in the upload thread (or at startup for a leftover)."""
        self.ensure_owned()
        if self.lease is not None and self.lease.lapsed():
            # An outage of the store kept the lease from being renewed: another trainer may
            # hold the output now. The upload fails like any other and is tried again once
            # a renewal confirms the lease (or reported lost when none does).
            raise LeaseLapsed(self.lease)
        checkpoint = manifest.kind == "checkpoint"
        if checkpoint and self.latest.step() == manifest.step:
            # Now an older checkpoint or none: the upload moves it back.
            self.latest.move_off(manifest.step)
        upload_artifact(self.remote, self.staged, name, manifest)
        if checkpoint:
            self.latest.move_to(name, manifest)
        if on_durable is not None:
            on_durable()
        if not checkpoint:  # a checkpoint's durable callback says so itself
            log.info("%s complete: %d files -> %s", name, len(manifest.files), self.uri(name))
        if checkpoint:
            self.staged.discard_older_than(manifest.step)
            self.rotation.after_upload(manifest.step)

    def flush(self) -> None:
        self.uploads.flush(self.hold_uploads)

    def committed(self, name: str, manifest: Manifest) -> str:
        return (
            f"{name} staged: {len(manifest.files)} files in {self.staged.path(name)}; "
            f"uploading to {self.uri(name)}"
        )

    @property
    def unpublished_output(self) -> bool:
        return self.uploads.unpublished

    def lost_output(self) -> str | None:
        return self.uploads.lost()

    def close(self) -> None:
        self.uploads.close(self.hold_uploads)

    # --- resume ------------------------------------------------------------------------------
    def latest_pointer(self) -> dict[str, object] | None:
        return self.latest.value()

    def resume_candidates(self) -> Iterator[ResumeCandidate]:
        steps = self.remote.checkpoint_steps()
        pointed = self.latest.step()
        if pointed is not None:
            log.info("%s points at checkpoint-%d", self.latest.uri, pointed)
            steps.add(pointed)
        for step in sorted(steps, reverse=True):
            name = checkpoint_name(step)
            yield ResumeCandidate(
                step, self.uri(name), functools.partial(self.downloads.fetch, name)
            )

    def artifact_manifest(self, name: str) -> Manifest | None:
        """The manifest of ``name`` on S3 when it is there and complete for its kind
        (files not checked)."""
        return self.remote.manifest(name)

    def complete_artifacts(self) -> Iterator[tuple[str, Manifest]]:
        names = [checkpoint_name(s) for s in sorted(self.remote.checkpoint_steps(), reverse=True)]
        for name in [*names, *FINAL_ARTIFACTS]:
            manifest = self.remote.manifest(name)
            if manifest is not None:
                yield name, manifest

    def lease_store(self) -> LeaseStore:
        return S3Lease(self.store, self.remote.key(LEASE_NAME))


__all__ = [
    "CHECKPOINT_PREFIX",
    "LATEST_POINTER",
    "LocalTarget",
    "OutputTarget",
    "ResumeCandidate",
    "S3Target",
    "UploadFailed",
]
