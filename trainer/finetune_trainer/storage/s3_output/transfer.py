"""Uploads to S3: one artifact's staged directory at a time, in the background and in
order, with the failures remembered until a later upload makes up for them or ``flush``
reports them. Each S3 request is retried with backoff by the store itself (S3Store)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import InvalidInput
from ...remote_errors import SafeMessage, failure_summary
from ..manifest import MANIFEST_NAME, ArtifactKind, Manifest
from ..retry import RetryPolicy
from .prefix import OutputPrefix
from .staging import StagedCopies

log = logging.getLogger(__name__)

OnDurable = Callable[[], None]
Upload = Callable[[str, Manifest, OnDurable | None], None]
# A deadline on the monotonic clock, asked again before each try (a stop signal moves it).
Deadline = Callable[[], float]

# While the exit is held for failed uploads, each request gives up sooner, so that one
# try never runs past the deadline by a full backoff; the hold itself tries again.
_HOLD_RETRY = RetryPolicy(attempts=2, base_delay=1.0, max_delay=2.0)
_HOLD_PAUSE = 3.0


class UploadFailed(SafeMessage):
    """An artifact that could not be uploaded, after its retries; its staged copy remains.
    Its text says why in the trainer's own words (remote_errors.failure_summary)."""


@dataclass
class FailedUpload:
    name: str
    manifest: Manifest
    error: Exception
    on_durable: OnDurable | None = None  # run when a later try succeeds
    reported: bool = False  # raised once; closing does not raise it again

    @property
    def kind(self) -> ArtifactKind:
        return self.manifest.kind

    @property
    def step(self) -> int:
        return self.manifest.step


def upload_artifact(
    remote: OutputPrefix, staged: StagedCopies, name: str, manifest: Manifest
) -> None:
    """Replace ``<prefix>/<name>/`` with the staged copy of ``name``, the manifest last."""
    stale = remote.store.delete_prefix(remote.key(name))
    if stale:
        log.info("removed %d stale objects under %s before uploading", stale, remote.uri(name))
    size = remote.store.upload_dir(staged.path(name), remote.key(name), last=MANIFEST_NAME)
    log.info("uploaded %s (%d files, %d bytes)", remote.uri(name), len(manifest.files) + 1, size)


class UploadQueue:
    """Runs ``upload`` for each published artifact in one background thread, in order.

    An upload that fails after its retries does not stop training (S3 may be back for the
    next one), unless it was refused: then every later upload would be too. A later
    successful upload makes up for the failed checkpoints before it, which are then only
    logged; ``flush`` raises (once) for a failed final artifact, or for the newest
    checkpoint when its upload failed, and ``unpublished`` remembers it."""

    def __init__(self, upload: Upload, remote: OutputPrefix, staged: StagedCopies) -> None:
        self._upload = upload
        self.remote = remote
        self.staged = staged
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="s3-upload"
        )
        self._pending: list[concurrent.futures.Future[None]] = []
        # Uploads that failed and that no later upload made up for, oldest first.
        self._failed: list[FailedUpload] = []
        self._lock = threading.Lock()

    def submit(self, name: str, manifest: Manifest, on_durable: OnDurable | None = None) -> None:
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
        """``upload``, in the upload thread. A failure is remembered for ``flush`` rather
        than raised; a success makes up for the checkpoints that failed before it, since
        resume (or the run's result) needs only the newer artifact."""
        try:
            self._upload(name, manifest, on_durable)
        except Exception as exc:
            log.warning(
                "%s was not uploaded (%s); its staged copy stays in %s",
                self.remote.uri(name),
                exc,
                self.staged.path(name),
            )
            with self._lock:
                superseded = self._staged_failures_before(manifest)
                self._failed.append(FailedUpload(name, manifest, exc, on_durable))
            # Through a long outage, one staged checkpoint per save would fill the scratch
            # volume; resume needs the newest (and one fallback).
            self._give_up(superseded, f"its staged copy is removed: {name} supersedes it")
            for failed in superseded:
                self.staged.remove(failed.name)
            return
        with self._lock:
            superseded = [f for f in self._failed if f.kind == "checkpoint"]
            self._failed = [f for f in self._failed if f.kind != "checkpoint"]
        self._give_up(superseded, f"{name}, uploaded since, takes its place")

    def _give_up(self, failed: list[FailedUpload], why: str) -> None:
        """Log failed checkpoints that are no longer needed, and why."""
        for failure in failed:
            log.warning(
                "%s never reached S3 (%s); %s", self.remote.uri(failure.name), failure.error, why
            )

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

    def flush(self, hold: Deadline | None = None) -> None:
        """Wait for the queued uploads; with ``hold``, upload again what failed until it
        succeeds or the deadline passes (see :meth:`retry_failed`); then raise for the
        worst failure not reported yet."""
        with self._lock:
            pending, self._pending = self._pending, []
        if hold is None:
            concurrent.futures.wait(pending)
        else:
            # Queued uploads give up as soon as held ones do: with the usual retries, each
            # upload still queued during an outage would take its full backoff, and a few
            # of them would outlast the pod's grace period before the held retries start.
            store = self.remote.store
            saved, store.retry = store.retry, _HOLD_RETRY
            try:
                concurrent.futures.wait(pending)
            finally:
                store.retry = saved
            self.retry_failed(hold)
        with self._lock:
            unreported = [f for f in self._failed if not f.reported]
        self._report(unreported)

    def retry_failed(self, deadline: Deadline, sleep: Callable[[float], None] = time.sleep) -> None:
        """Upload again, oldest first, each artifact whose upload failed and that nothing
        uploaded since made up for, until none is left or ``deadline()`` passes: its staged
        copy lives in the pod's scratch, which ends with the pod. A refusal (denied access,
        no bucket) is not tried again: every try would meet the same answer."""
        store = self.remote.store
        saved, store.retry = store.retry, _HOLD_RETRY
        try:
            while True:
                with self._lock:
                    failed = [f for f in self._failed if not isinstance(f.error, InvalidInput)]
                if not failed:
                    return
                left = deadline() - time.monotonic()
                if left <= 0:
                    return
                log.warning(
                    "waiting up to %.0fs for S3 before exiting, to upload %s (staged only in "
                    "this pod's scratch)",
                    left,
                    ", ".join(f.name for f in failed),
                )
                for failure in failed:
                    if deadline() <= time.monotonic():
                        return
                    with self._lock:
                        if failure not in self._failed:
                            continue  # made up for by an upload just now
                        self._failed.remove(failure)
                    self._upload_noting_failure(failure.name, failure.manifest, failure.on_durable)
                with self._lock:
                    if not self._failed:
                        return
                sleep(max(0.0, min(_HOLD_PAUSE, deadline() - time.monotonic())))
        finally:
            store.retry = saved

    def lost(self) -> str | None:
        """What failed to upload and that nothing made up for, and why, in the trainer's
        own words; None when everything arrived."""
        with self._lock:
            failed = list(self._failed)
        if not failed:
            return None
        return "; ".join(
            f"{f.name} (step {f.step}) never reached {self.remote.uri(f.name)} "
            f"({failure_summary(f.error)}); its only copy was staged in this pod's scratch "
            f"({self.staged.path(f.name)}) and ends with the pod"
            for f in failed
        )

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
            f"the upload of {worst.name} to {self.remote.uri(worst.name)} failed after its "
            f"retries: {failure_summary(worst.error)}"
        ) from worst.error

    @property
    def unpublished(self) -> bool:
        """Whether an upload failed that no later one made up for."""
        with self._lock:
            return bool(self._failed)

    def close(self, hold: Deadline | None = None) -> None:
        """Finish the queued uploads (holding and raising as ``flush``), then stop the
        thread."""
        try:
            self.flush(hold)
        finally:
            self._executor.shutdown(wait=True)
