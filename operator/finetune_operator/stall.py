"""The progress deadline (spec.lifecycle.progressDeadlineSeconds): a Running trainer that
makes no progress for that long is Stalled, and with ``onStall: Restart`` its pod goes.

Progress is what ``status.progress`` shows changing: a step done, or the trainer moving
on to its next stage (Downloading, Loading, Compiling, Training, Saving). It is judged
only from what the operator already has, so a thousand quiet FineTuneJobs cost the API
server nothing: the trainer container's start (the pod in the watch cache), the stored
``status.progress.updatedAt`` (written whenever the progress changed), and what the
progress poller saw of the metrics endpoint (progress.Watch). The reconcile returns the
seconds until the deadline, and the work queue brings the FineTuneJob back then.

A trainer whose endpoint does not answer makes no progress the operator can see: the
deadline runs on from its last progress. The stored times survive an operator restart;
only for an endpoint that has not answered this operator process yet, the deadline is
counted from its first try (a restarted operator cannot tell a trainer that went quiet
while it was away from one that is still starting up).

Restart deletes the pod, which counts as one of the Job's retries, as a crash would: a
trainer that stalls every time ends Failed (BackoffLimitExceeded) instead of holding its
GPU forever. So a restart is made only while spec.lifecycle.backoffLimit leaves one (the
Job's podFailurePolicy ignores only disruptions); past that, the stall is reported only,
and the Job is never failed by the operator's deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from finetune_api.spec import LifecycleSpec
from finetune_api.status import Phase, Reason

from .conditions import conditions_for_phase
from .kube import Obj
from .naming import TRAINER_CONTAINER
from .progress import Watch
from .status_update import Event, StatusUpdate
from .timeutil import parse_time, rfc3339

# The reconcile that acts on a deadline comes this much after it: the stored times are to
# the second.
DEADLINE_MARGIN_SECONDS = 1.0
# Before the poller has tried a trainer (just after an operator restart) nothing is judged;
# the poller's first try queues the FineTuneJob, and this is the fallback should it not.
UNSEEN_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class StallCheck:
    """What the progress deadline decided: the status (Stalled past the deadline), when to
    look again (None: only when something changes), and the pod to delete (namespace,
    name, uid) once that status is recorded."""

    update: StatusUpdate
    retry_after: float | None = None
    delete_pod: tuple[str, str, str] | None = None


def container_started(pod: Obj) -> datetime | None:
    """When the trainer container of ``pod`` started running."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            running = (status.get("state") or {}).get("running") or {}
            return parse_time(running.get("startedAt"))
    return None


def last_progress(
    started: datetime | None,
    stored_progress: dict[str, Any] | None,
    update: StatusUpdate,
    watch: Watch | None,
) -> datetime | None:
    """The newest moment the trainer is known to have made progress: its start, the
    stored or about-to-be-written status.progress.updatedAt, a change the poller saw, or
    (for an endpoint this process has never had an answer from) the poller's first try."""
    moments = [started, parse_time((stored_progress or {}).get("updatedAt"))]
    written = update.status.progress
    if written is not None and written.updated_at:
        moments.append(parse_time(written.updated_at))
    if watch is not None:
        moments.append(watch.changed_at)
        if watch.reading is None:
            moments.append(watch.first_tried)
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def check_progress(
    update: StatusUpdate,
    *,
    previous: dict[str, Any],
    lifecycle: LifecycleSpec,
    job: Obj,
    pod: Obj,
    watch: Watch | None,
    generation: int | None,
    now: datetime,
) -> StallCheck:
    """Judge a Running trainer (``pod``) against its progress deadline. ``update`` is the
    status the world implies otherwise; ``previous`` the stored status."""
    meta = pod["metadata"]
    since = last_progress(container_started(pod), previous.get("progress"), update, watch)
    deadline = timedelta(seconds=lifecycle.progress_deadline_seconds)
    if since is None or now < since + deadline or watch is None:
        retry = UNSEEN_RETRY_SECONDS
        if since is not None and now < since + deadline:
            retry = (since + deadline - now) / timedelta(seconds=1) + DEADLINE_MARGIN_SECONDS
        recorded = previous.get("reason") == Reason.PROGRESS_DEADLINE_EXCEEDED
        if recorded and previous.get("podName") == meta["name"] and not _answered(watch):
            # Stalled as recorded by an earlier operator process, and nothing seen since
            # (this one has had no answer from the trainer yet): not cleared on no news.
            message = str(previous.get("message") or "")
            kept = _stalled_status(update, previous, message, generation, now, restart=False)
            return StallCheck(kept, retry_after=retry)
        return StallCheck(update, retry_after=retry)
    restart = lifecycle.on_stall == "Restart" and _retry_left(job)
    message = stall_message(
        lifecycle,
        since=since,
        pod_name=str(meta["name"]),
        watch=watch,
        stored_progress=previous.get("progress") or {},
        checkpoint=(previous.get("checkpoint") or {}).get("step"),
        restart=restart,
        backoff_limit=_backoff_limit(job),
    )
    stalled = _stalled_status(update, previous, message, generation, now, restart=restart)
    if restart:
        return StallCheck(stalled, delete_pod=(meta["namespace"], meta["name"], meta["uid"]))
    return StallCheck(stalled)


def _answered(watch: Watch | None) -> bool:
    return watch is not None and watch.reading is not None


def stall_message(
    lifecycle: LifecycleSpec,
    *,
    since: datetime,
    pod_name: str,
    watch: Watch,
    stored_progress: dict[str, Any],
    checkpoint: int | None,
    restart: bool,
    backoff_limit: int,
) -> str:
    """What the Stalled status and its Event say: where the trainer is, since when, why
    the operator cannot see it move, and what to do. Stable while the stall lasts (it
    names moments, not durations), so it costs no status write of its own."""
    reading = watch.reading
    step = reading.step if reading is not None and reading.step is not None else None
    step = step if step is not None else stored_progress.get("step")
    total = reading.total_steps if reading is not None else stored_progress.get("totalSteps")
    stage = reading.stage if reading is not None and reading.stage else stored_progress.get("stage")
    where = f"step {step}/{total}" if step is not None and total else f"step {step}"
    if step is None:
        where = "no step done yet"
    where += f", stage {stage}" if stage else ", stage unknown"
    deadline = lifecycle.progress_deadline_seconds
    text = (
        f"no training progress since {rfc3339(since)} (spec.lifecycle.progressDeadlineSeconds "
        f"is {deadline}s): the trainer is at {where}"
    )
    if reading is None:
        text += f"; its metrics endpoint has not answered since {rfc3339(watch.first_tried)}"
    elif watch.silent_since is not None:
        # No moment here: an endpoint that answers now and then would change the message,
        # and so write the status, each time it goes quiet again.
        text += "; its metrics endpoint is not answering"
    resume = f"checkpoint-{checkpoint}" if checkpoint is not None else "its newest checkpoint"
    if restart:
        text += (
            f"; deleting trainer pod {pod_name} so the Job retries from {resume} (one of "
            f"spec.lifecycle.backoffLimit's {backoff_limit} retries)"
        )
        return text + f"; if a stage legitimately takes longer, raise {_DEADLINE_FIELD}"
    text += (
        f"; see where it hangs with kubectl logs {pod_name}; if a stage legitimately "
        f"takes longer, raise {_DEADLINE_FIELD}"
    )
    if lifecycle.on_stall == "Restart":
        return text + (
            f"; not restarted: the Job has used spec.lifecycle.backoffLimit's "
            f"{backoff_limit} retries (raise it, or delete the pod to fail the Job)"
        )
    return text + (
        f"; set spec.lifecycle.onStall: Restart to restart it from {resume}, or delete "
        "the pod to restart it once"
    )


_DEADLINE_FIELD = "spec.lifecycle.progressDeadlineSeconds"


def _backoff_limit(job: Obj) -> int:
    return int((job.get("spec") or {}).get("backoffLimit") or 0)


def _retry_left(job: Obj) -> bool:
    """Whether the Job would start another pod after this one fails (its failed count
    leaves out the disruptions its podFailurePolicy ignores)."""
    failed = int((job.get("status") or {}).get("failed") or 0)
    return failed < _backoff_limit(job)


def _stalled_status(
    update: StatusUpdate,
    previous: dict[str, Any],
    message: str,
    generation: int | None,
    now: datetime,
    *,
    restart: bool,
) -> StatusUpdate:
    """``update`` as Stalled: the phase stays Running, the reason is
    ProgressDeadlineExceeded, and a Warning Event says so the first time."""
    status = update.status.model_copy(deep=True)
    reason = Reason.PROGRESS_DEADLINE_EXCEEDED
    status.reason = reason
    status.message = message
    status.conditions = conditions_for_phase(
        Phase.RUNNING,
        reason,
        message,
        generation,
        previous.get("conditions"),
        rfc3339(now),
        stalled=True,
    )
    # The phase's own Event (Running again) is this one's to say: the first time, and
    # again when the operator acts on it (a restart, after onStall changed to Restart).
    events = [event for event in update.events if event.reason != Reason.RUNNING]
    if previous.get("reason") != reason or (restart and previous.get("message") != message):
        events.append(Event("Warning", reason, message))
    return StatusUpdate(status, events, update.unreadable)
