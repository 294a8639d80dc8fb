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

import concurrent.futures
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput, output_access
from ..remote_errors import SafeMessage, failure_summary
from .checkpoints import (
    CHECKPOINT_PREFIX,
    INCOMPLETE_DIR,
    LocalArtifacts,
    checkpoint_name,
    parse_checkpoint_name,
    steps_to_rotate_out,
)
from .fsutil import remove_tree
from .manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_FILES,
    ArtifactKind,
    Manifest,
    ManifestError,
    complete_manifest,
    utc_now,
    verify_dir,
)
from .paths import relative_name_problem
from .s3 import ObjectTooLarge, S3Store, UnsafeKey, WriteConflict, is_not_found, join_key

log = logging.getLogger(__name__)

LATEST_POINTER = "latest"
# The pointer is a small JSON object; anything larger is not one of ours.
MAX_POINTER_BYTES = 64 * 1024
# Conditional writes of the pointer that met another writer's change are decided again
# from what it says now, this many times in all.
_POINTER_ATTEMPTS = 3

OnDurable = Callable[[], None]


@dataclass(frozen=True)
class ResumeCandidate:
    """A checkpoint that may be resumed from; ``fetch`` makes it local and verifies it,
    raising ManifestError with the reason when it is not usable (incomplete or corrupt), or
    OSError when it could not be read just now."""

    step: int
    uri: str
    fetch: Callable[[], tuple[Path, Manifest]]


class UploadFailed(SafeMessage):
    """An artifact that could not be uploaded, after its retries; its staged copy remains.
    Its text says why in the trainer's own words (remote_errors.failure_summary)."""


@dataclass
class FailedUpload:
    name: str
    kind: ArtifactKind
    step: int
    error: Exception
    reported: bool = False  # raised once; closing does not raise it again


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

    def prepare(self) -> None:
        with output_access(f"output {self.uri_base}"):
            self.artifacts.prepare()

    def published(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        """An artifact was committed locally. For a local target it is already final."""
        if on_durable is not None:
            on_durable()
        if manifest.kind == "checkpoint" and self.save_total_limit is not None:
            self.artifacts.rotate(self.save_total_limit, upto=manifest.step)

    def flush(self) -> None:
        """Wait until every published artifact reached its destination; raise if one
        could not."""

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


class LocalTarget(OutputTarget):
    """output.path or output.pvc: artifacts are final once committed."""


class S3Target(OutputTarget):
    """output.s3: artifacts are committed in a local staging directory, then uploaded in
    the background (one at a time, in order) under ``<prefix>/<name>/`` with the manifest
    last; for checkpoints the ``<prefix>/latest`` pointer then moves. A staging copy is
    deleted only after its upload succeeded (the newest one is kept for a fast resume).

    An upload that fails after its retries does not stop training (S3 may be back for the
    next one), unless it was refused: then every later upload would be too. A later
    successful upload makes up for the failed checkpoints before it, which are then only
    logged; ``flush`` raises (once) for a failed final artifact, or for the newest
    checkpoint when its upload failed, and ``unpublished_output`` remembers it.

    ``latest`` names a checkpoint whose upload finished, and never moves to a lower step
    while the one it names is complete. The one exception is a checkpoint uploaded again
    under the same name (a run that fell back to an older checkpoint and reached that
    step again): ``latest`` first moves to the newest other complete checkpoint, because
    the one it named stops being complete while its prefix is rewritten."""

    def __init__(
        self,
        store: S3Store,
        prefix: str,
        staging: Path,
        save_total_limit: int | None = None,
    ) -> None:
        super().__init__(
            staging, store.uri(prefix) if prefix else f"s3://{store.bucket}", save_total_limit
        )
        self.store = store
        self.prefix = prefix
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="s3-upload"
        )
        self._pending: list[concurrent.futures.Future[None]] = []
        # Uploads that failed and that no later upload made up for, oldest first.
        self._failed: list[FailedUpload] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.uri_base} (staged in {self.artifacts.root})"

    def key(self, *parts: str) -> str:
        return join_key(self.prefix, *parts)

    # --- publishing ------------------------------------------------------------------------
    def prepare(self) -> None:
        super().prepare()
        # Credentials that may list and read but not write would otherwise only fail at
        # the first upload, after the model load and the first checkpoint's GPU time.
        self.store.check_writable(self.prefix)
        self._upload_leftovers()

    def _upload_leftovers(self) -> None:
        """Complete checkpoints a previous container staged but did not get to upload.
        Each is verified first (sizes and checksums): the container may have been killed
        while the disk was failing, and a corrupt upload would only be found at resume."""
        for checkpoint in reversed(self.artifacts.complete_checkpoints()):
            name = checkpoint.path.name
            if self.store.head_etag(self.key(name, MANIFEST_NAME)) is not None:
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
            self._upload(name, manifest)

    def published(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        with self._lock:
            # Queued before older failures are looked at: S3 may be back by now, and this
            # newer artifact is the one the next attempt needs.
            self._pending.append(
                self._executor.submit(self._upload_noting_failure, name, manifest, on_durable)
            )
            self._pending = [f for f in self._pending if not f.done()]
            unreported = [f for f in self._failed if not f.reported]
        # Denied access or no bucket: every later upload would meet the same answer.
        self._report([f for f in unreported if isinstance(f.error, InvalidInput)])

    def _upload_noting_failure(
        self, name: str, manifest: Manifest, on_durable: OnDurable | None = None
    ) -> None:
        """``_upload``, in the upload thread. A failure is remembered for ``flush`` rather
        than raised; a success makes up for the checkpoints that failed before it, since
        resume (or the run's result) needs only the newer artifact."""
        try:
            self._upload(name, manifest, on_durable)
        except Exception as exc:
            log.warning(
                "%s was not uploaded (%s); its staged copy stays in %s",
                self.uri(name),
                exc,
                self.artifacts.root / name,
            )
            with self._lock:
                superseded = self._staged_failures_before(manifest)
                self._failed.append(FailedUpload(name, manifest.kind, manifest.step, exc))
            # Through a long outage, one staged checkpoint per save would fill the scratch
            # volume; resume needs the newest (and one fallback).
            self._give_up(superseded, f"its staged copy is removed: {name} supersedes it")
            for failed in superseded:
                remove_tree(self.artifacts.root / failed.name)
            return
        with self._lock:
            superseded = [f for f in self._failed if f.kind == "checkpoint"]
            self._failed = [f for f in self._failed if f.kind != "checkpoint"]
        self._give_up(superseded, f"{name}, uploaded since, takes its place")

    def _give_up(self, failed: list[FailedUpload], why: str) -> None:
        """Log failed checkpoints that are no longer needed, and why."""
        for failure in failed:
            log.warning("%s never reached S3 (%s); %s", self.uri(failure.name), failure.error, why)

    def _staged_failures_before(self, manifest: Manifest) -> list[FailedUpload]:
        """For a checkpoint that failed too: the failed checkpoints older than the newest
        one before it, taken off the list (call with the lock held). That one stays staged
        as the fallback should the newest not verify when the next container uploads it."""
        if manifest.kind != "checkpoint":
            return []
        older = sorted(
            (f for f in self._failed if f.kind == "checkpoint" and f.step < manifest.step),
            key=lambda f: f.step,
        )[:-1]
        self._failed = [f for f in self._failed if f not in older]
        return older

    def _upload(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
        local = self.artifacts.root / name
        checkpoint = manifest.kind == "checkpoint"
        if checkpoint and self._latest_step() == manifest.step:
            # Now an older checkpoint or none: the upload moves it back.
            self._repoint_latest_before_rewriting(manifest.step)
        stale = self.store.delete_prefix(self.key(name))
        if stale:
            log.info("removed %d stale objects under %s before uploading", stale, self.uri(name))
        size = self.store.upload_dir(local, self.key(name), last=MANIFEST_NAME)
        log.info("uploaded %s (%d files, %d bytes)", self.uri(name), len(manifest.files) + 1, size)
        if checkpoint:
            self._move_latest(name, manifest)
        if on_durable is not None:
            on_durable()
        if checkpoint:
            self._rotate_after_upload(manifest.step)

    # --- the latest pointer ------------------------------------------------------------------
    # Every change is a conditional write on what was just read (If-Match on its ETag, or
    # If-None-Match: * when there was none; see S3Store.put_replacing): a change made by
    # another writer in between is never overwritten blindly, but read and decided again.

    def _pointer_to(self, manifest: Manifest) -> bytes:
        name = checkpoint_name(manifest.step)
        value = {
            "step": manifest.step,
            "checkpoint": name,
            "uri": self.uri(name),
            "fingerprint": manifest.fingerprint,
            "updatedAt": utc_now(),
        }
        return json.dumps(value, sort_keys=True).encode()

    def _remote_manifest(self, step: int) -> Manifest | None:
        return self.artifact_manifest(checkpoint_name(step))

    def _change_latest(self, decide: Callable[[int | None], Manifest | bool | None]) -> None:
        """Read the pointer, ask ``decide`` (given the step it names) what it should become
        -- a checkpoint's manifest, False to remove it, None to leave it -- and write that
        on condition that the pointer is still what was read; on a conflict, again."""
        key = self.key(LATEST_POINTER)
        conflict: WriteConflict | None = None
        for _attempt in range(_POINTER_ATTEMPTS):
            pointer, etag = self._read_latest()
            step = pointer.get("step") if pointer is not None else None
            wanted = decide(step if isinstance(step, int) else None)
            try:
                if wanted is None:
                    return
                if wanted is False:
                    if etag is not None:
                        self.store.delete_replacing(key, etag)
                    return
                assert isinstance(wanted, Manifest)
                self.store.put_replacing(key, self._pointer_to(wanted), etag)
                return
            except WriteConflict as exc:
                log.warning("%s; reading %s again", exc, self.uri(LATEST_POINTER))
                conflict = exc
        assert conflict is not None
        raise conflict

    def _move_latest(self, name: str, manifest: Manifest) -> None:
        """Point ``latest`` at the checkpoint just uploaded, unless it names a newer one
        that is complete (a run resumed from an older checkpoint, say because the newer
        one was corrupt: its uploads must not drag the pointer back)."""

        def decide(held: int | None) -> Manifest | None:
            if held is not None and held > manifest.step:
                if self._remote_manifest(held) is not None:
                    log.info(
                        "%s stays at checkpoint-%d, newer than %s",
                        self.uri(LATEST_POINTER),
                        held,
                        name,
                    )
                    return None
                log.info(
                    "%s named checkpoint-%d, which is not complete on S3; moving it to %s",
                    self.uri(LATEST_POINTER),
                    held,
                    name,
                )
            return manifest

        self._change_latest(decide)

    def _repoint_latest_before_rewriting(self, step: int) -> None:
        """``latest`` names ``checkpoint-<step>``, which is about to be deleted and uploaded
        again: point it at the newest other complete checkpoint below, or remove it when
        there is none. It moves back to ``step`` after the upload."""

        def decide(held: int | None) -> Manifest | bool | None:
            if held != step:
                return None  # moved meanwhile: not ours to change any more
            for older in sorted((s for s in self._remote_steps() if s < step), reverse=True):
                manifest = self._remote_manifest(older)
                if manifest is not None:
                    log.info(
                        "%s moves back to checkpoint-%d while %s is uploaded again",
                        self.uri(LATEST_POINTER),
                        older,
                        self.uri(checkpoint_name(step)),
                    )
                    return manifest
            log.info(
                "removing %s while %s, the only checkpoint it could name, is uploaded again",
                self.uri(LATEST_POINTER),
                self.uri(checkpoint_name(step)),
            )
            return False

        self._change_latest(decide)

    def _rotate_after_upload(self, uploaded_step: int) -> None:
        # Staging: everything older than the checkpoint just uploaded is safely on S3.
        for checkpoint in self.artifacts.checkpoints():
            if checkpoint.step < uploaded_step:
                remove_tree(checkpoint.path)
        if self.save_total_limit is None:
            return
        steps = self._remote_steps()
        # Manifests above the step just uploaded are never counted: no need to read them.
        complete = [s for s in steps if s <= uploaded_step and self._has_manifest(s)]
        for step in steps_to_rotate_out(
            steps, complete, self.save_total_limit, upto=uploaded_step, protect={uploaded_step}
        ):
            log.info(
                "rotating out %s (saveTotalLimit=%d)",
                self.uri(checkpoint_name(step)),
                self.save_total_limit,
            )
            self.store.delete_prefix(self.key(checkpoint_name(step)))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        concurrent.futures.wait(pending)
        with self._lock:
            unreported = [f for f in self._failed if not f.reported]
        self._report(unreported)

    def _report(self, failed: list[FailedUpload]) -> None:
        """Raise for the worst of ``failed``, unless it is empty; all count as reported."""
        if not failed:
            return
        for failure in failed:
            failure.reported = True
        # A final artifact first: without it the run has no result.
        worst = next((f for f in failed if f.kind != "checkpoint"), failed[-1])
        if isinstance(worst.error, InvalidInput):
            raise worst.error  # a refusal names output.s3 and what to check already
        raise UploadFailed(
            f"the upload of {worst.name} to {self.uri(worst.name)} failed after its retries: "
            f"{failure_summary(worst.error)}"
        ) from worst.error

    @property
    def unpublished_output(self) -> bool:
        with self._lock:
            return bool(self._failed)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)

    # --- resume ------------------------------------------------------------------------------
    def _remote_steps(self) -> set[int]:
        steps = set()
        for child in self.store.list_children(self.prefix):
            step = parse_checkpoint_name(child)
            if step is not None:
                steps.add(step)
        return steps

    def _has_manifest(self, step: int) -> bool:
        key = self.key(checkpoint_name(step), MANIFEST_NAME)
        return self.store.head_etag(key) is not None

    def _latest_step(self) -> int | None:
        pointer = self.latest_pointer()
        step = pointer.get("step") if pointer is not None else None
        return step if isinstance(step, int) else None

    def latest_pointer(self) -> dict[str, object] | None:
        return self._read_latest()[0]

    def _read_latest(self) -> tuple[dict[str, object] | None, str | None]:
        """The pointer's content (None when absent or not ours) and its ETag (None when
        absent)."""
        try:
            found = self.store.get_with_etag(self.key(LATEST_POINTER), MAX_POINTER_BYTES)
        except ObjectTooLarge as exc:
            log.warning("%s; ignoring it", exc)
            return None, self.store.head_etag(self.key(LATEST_POINTER))
        if found is None:
            return None, None
        raw, etag = found
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("%s is not valid JSON; ignoring it", self.uri(LATEST_POINTER))
            return None, etag
        return (value if isinstance(value, dict) else None), etag

    def resume_candidates(self) -> Iterator[ResumeCandidate]:
        steps = self._remote_steps()
        pointed = self._latest_step()
        if pointed is not None:
            log.info("%s points at checkpoint-%d", self.uri(LATEST_POINTER), pointed)
            steps.add(pointed)
        for step in sorted(steps, reverse=True):
            name = checkpoint_name(step)
            yield ResumeCandidate(step, self.uri(name), functools.partial(self._fetch, name))

    def _fetch(self, name: str) -> tuple[Path, Manifest]:
        try:
            raw = self.store.get_bytes(self.key(name, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        except ObjectTooLarge as exc:
            raise ManifestError(str(exc)) from None
        if raw is None:
            raise ManifestError(f"no {MANIFEST_NAME} on S3 (the upload never finished)")
        remote = complete_manifest(raw)
        local = self.artifacts.root / name
        try:
            if verify_dir(local) == remote:
                log.info("the staged copy of %s matches S3; not downloading it", name)
                return local, remote
        except ManifestError:
            pass
        self._check_listing(name, remote)
        scratch = self.artifacts.root / INCOMPLETE_DIR / f"download-{name}"
        if scratch.exists():
            remove_tree(scratch)
        try:
            self.store.download_prefix(self.key(name), scratch)
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
        prefix = self.key(name) + "/"
        try:
            listed = self.store.list_sizes(prefix, MAX_MANIFEST_FILES + 1)
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

    def artifact_manifest(self, name: str) -> Manifest | None:
        """The manifest of ``name`` on S3 when it is there and complete for its kind
        (files not checked)."""
        try:
            raw = self.store.get_bytes(self.key(name, MANIFEST_NAME), MAX_MANIFEST_BYTES)
            return complete_manifest(raw) if raw is not None else None
        except (ManifestError, ObjectTooLarge):
            return None


__all__ = [
    "CHECKPOINT_PREFIX",
    "LATEST_POINTER",
    "LocalTarget",
    "OutputTarget",
    "ResumeCandidate",
    "S3Target",
    "UploadFailed",
]
