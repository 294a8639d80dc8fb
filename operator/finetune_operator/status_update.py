"""Compute a FineTuneJob's next status and the Events that announce the change. Pure: the
handlers gather the inputs (the Job, its pods, the trainer's metrics) and write the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from finetune_api.config import OutputSpec
from finetune_api.contract import CheckpointRef, TerminationMessage, TrainerProgress
from finetune_api.safe_text import safe_text
from finetune_api.status import (
    TERMINAL_PHASES,
    CheckpointStatus,
    FineTuneJobStatus,
    OutputStatus,
    Phase,
    Reason,
    TrackingStatus,
)

from .conditions import conditions_for_phase
from .observe import Observation
from .progress import progress_status
from .provenance import provenance_status
from .timeutil import rfc3339


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class StatusUpdate:
    """A status to write, with the Events that announce it. The status is the typed model,
    so every string in it was made safe as the model took it (safe_text.py): whatever a
    trainer, a ConfigMap's keys or an API server's refusal put in a message, the status
    stays within the CRD's limits and free of terminal escapes."""

    status: FineTuneJobStatus
    events: list[Event] = field(default_factory=list)
    # What the stored status held that readable_status left out (a shape no operator
    # wrote): the patch removes it, or it would be read, left out and rewritten forever.
    unreadable: dict[str, Any] = field(default_factory=dict)

    @property
    def patch(self) -> dict[str, Any]:
        """The JSON merge patch that writes this status: the fields set, a None among them
        written as null (it removes the stored value). An unreadable stored field the status
        does not set is removed; one it sets as an object gets null for each stored key it
        does not set, since a merge patch would keep them."""
        patch = self.status.to_wire()
        for key, stored in self.unreadable.items():
            written = patch.get(key)
            if key not in patch:
                patch[key] = None
            elif isinstance(written, dict) and isinstance(stored, dict):
                patch[key] = {**dict.fromkeys(stored), **written}
        return patch

    def changed_from(self, previous: dict[str, Any]) -> bool:
        """Whether the status is worth a write over ``previous`` (the stored status):
        something other than the fields that ride along (written with the next change, not
        on their own) differs."""
        return any(previous.get(k) != v for k, v in self.patch.items() if k not in _RIDE_ALONG)


# Facts every run gains within seconds of its Job's creation (the Job controller's start
# time, the new pod's name): on their own they would cost a status write each for every
# FineTuneJob, so they are written with the next change of phase, reason or progress. A
# replaced pod is a restart, and that change writes its name.
_RIDE_ALONG = frozenset({"startTime", "podName"})


def readable_status(stored: object) -> dict[str, Any]:
    """The stored status as the operator reads it: as stored, less each field (or
    condition) the status model would refuse, so that a shape no operator wrote is replaced
    by the next status instead of failing every reconcile."""
    if not isinstance(stored, dict):
        return {}
    status = dict(stored)
    while True:
        try:
            FineTuneJobStatus.model_validate(status)
            return status
        except ValidationError as exc:
            refused = [error["loc"] for error in exc.errors()]
        if any(not loc for loc in refused):
            return {}
        items = {loc[1] for loc in refused if loc[0] == "conditions" and len(loc) > 1}
        fields = {loc[0] for loc in refused if loc[0] != "conditions" or len(loc) == 1}
        if not fields & status.keys() and not items:
            return {}  # nothing left to take out: read it as no status at all
        status = {k: v for k, v in status.items() if k not in fields}
        if items and "conditions" in status:
            status["conditions"] = [c for i, c in enumerate(status["conditions"]) if i not in items]


def _found_status(
    previous: dict[str, Any],
    phase: Phase,
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
    completion_time: str | None,
    *,
    stalled: bool = True,
) -> StatusUpdate:
    """A status the operator sets for a reason it found itself (not the Job's outcome):
    Stalled unless it clears by itself, with one Warning Event the first time that reason
    appears."""
    status = FineTuneJobStatus(
        phase=phase,
        reason=reason,
        message=message,
        observed_generation=generation,
        conditions=conditions_for_phase(
            phase,
            reason,
            message,
            generation,
            previous.get("conditions"),
            rfc3339(now),
            stalled=stalled,
        ),
        completion_time=completion_time,
    )
    events = []
    if previous.get("reason") != reason:
        events.append(Event("Warning", reason, message))
    return StatusUpdate(status, events)


def failed_status(
    previous: dict[str, Any],
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
) -> StatusUpdate:
    """Failed for a reason the operator found itself, with a Warning Event."""
    completion = previous.get("completionTime") or rfc3339(now)
    return _found_status(previous, Phase.FAILED, reason, message, generation, now, completion)


def waiting_status(
    previous: dict[str, Any],
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
) -> StatusUpdate:
    """Pending for a reason the operator found itself and that clears by itself (a quota
    that is used up): still Reconciling, as while a pod waits for a GPU, so GitOps tools
    show it progressing rather than failed; a Warning Event, and no outcome."""
    return _found_status(
        previous, Phase.PENDING, reason, message, generation, now, None, stalled=False
    )


def invalid_spec_status(
    previous: dict[str, Any], problems: list[str], generation: int | None, now: datetime
) -> StatusUpdate:
    """A spec the schema rejects: Failed, with every problem named, and no Job created."""
    return failed_status(
        previous, Reason.INVALID_SPEC, "invalid spec: " + "; ".join(problems), generation, now
    )


# How much of the API server's refusal goes into the status: enough to name the field,
# short enough that this status itself is never refused for its size.
_REJECTION_EXCERPT = 1024


def status_rejected_status(
    previous: dict[str, Any], rejection: str, generation: int | None, now: datetime
) -> StatusUpdate:
    """The API server refused the status the operator computed. The phase stays what it
    was (the Job may still be running: nothing here is an outcome), with the refusal as
    the reason and Stalled, so the problem is visible instead of the status silently
    staying stale; a later status the API server accepts replaces this one."""
    excerpt = safe_text(rejection, _REJECTION_EXCERPT)
    job = previous.get("jobName")
    message = (
        f"the API server rejected this FineTuneJob's status: {excerpt}; the operator cannot "
        "report on it until a status is accepted"
        + (f" (see Job {job} for how the run goes)" if job else "")
    )
    phase = Phase(previous.get("phase") or Phase.PENDING)
    # Only an outcome already recorded has a completion time.
    completion = previous.get("completionTime") if phase in TERMINAL_PHASES else None
    return _found_status(
        previous, phase, Reason.STATUS_REJECTED, message, generation, now, completion
    )


def kept_outcome(previous: dict[str, Any], generation: int | None) -> StatusUpdate:
    """A finished FineTuneJob whose Job is gone (ttlSecondsAfterFinished): the outcome stays
    as it was, and a later spec edit is acknowledged so GitOps tools see it observed."""
    conditions = [
        {**condition, "observedGeneration": generation}
        for condition in previous.get("conditions") or []
    ]
    status = FineTuneJobStatus.model_validate(
        {**previous, "observedGeneration": generation, "conditions": conditions}
    )
    return StatusUpdate(status)


def unchanged() -> StatusUpdate:
    """Nothing to write: the stored status stays as it is."""
    return StatusUpdate(FineTuneJobStatus())


def next_status(
    previous: dict[str, Any],
    *,
    observation: Observation,
    progress: TrainerProgress | None,
    output: OutputSpec,
    job_name: str,
    generation: int | None,
    now: datetime,
) -> StatusUpdate:
    """The status that the Job, its pods and the trainer's progress imply, over
    ``previous`` (the stored status)."""
    obs = observation
    recorded = (
        previous.get("phase") in TERMINAL_PHASES
        and obs.phase == previous.get("phase")
        and previous.get("reason") != Reason.STATUS_REJECTED  # not an outcome: replace it
    )
    if recorded and not obs.termination_text:
        # The outcome is recorded and the Job is still finished, but the trainer's pods are
        # gone: the Job's clean-up deletes them before the Job, so a read in between sees
        # only the Job's own, vaguer reason. What the trainer said stays on record.
        return kept_outcome(previous, generation)
    stamp = rfc3339(now)
    restarts = _restarts(previous, obs)
    message = obs.message
    if obs.reason == Reason.RUNNING and restarts:
        message += f" (attempt {restarts + 1}, after {obs.last_failure or 'a restart'})"
    status = FineTuneJobStatus(
        phase=obs.phase,
        reason=obs.reason,
        message=message,
        observed_generation=generation,
        job_name=job_name,
        restarts=restarts,
        conditions=conditions_for_phase(
            obs.phase, obs.reason, message, generation, previous.get("conditions"), stamp
        ),
    )
    if obs.phase == Phase.SUSPENDED:
        # Resuming starts a new pod, which is no restart (null removes the name).
        status.pod_name = None
    elif obs.pod:
        status.pod_name = obs.pod
    if obs.start_time:
        status.start_time = obs.start_time
    if obs.phase not in TERMINAL_PHASES:
        # A run that is not over has no completion time, even if an earlier status said
        # otherwise (null removes it in the merge patch).
        status.completion_time = None
    elif obs.completion_time:
        status.completion_time = obs.completion_time

    live = progress_status(progress, previous.get("progress"), now) if progress else None
    summary = obs.termination
    if summary is not None and obs.phase != Phase.RUNNING:
        # The last trainer's own word on its progress; while one runs, its metrics are newer.
        live = progress_status(summary.progress, previous.get("progress"), now) or live
    if live is not None:
        if obs.phase == Phase.SUCCEEDED:
            live.eta_seconds = 0
        status.progress = live

    checkpoint = _checkpoint(
        summary, progress, output, previous.get("checkpoint"), obs.departed_checkpoint
    )
    if checkpoint is not None:
        status.checkpoint = checkpoint
    if summary is not None and (summary.adapter_uri or summary.merged_uri):
        status.output = _output(summary)
    # The trainer's record only once the run has ended: a newer attempt may be running.
    ended = summary.provenance if summary is not None and obs.phase in TERMINAL_PHASES else None
    provenance = provenance_status(previous.get("provenance"), obs.provenance, ended)
    if provenance is not None:
        status.provenance = provenance
    if summary is not None and summary.mlflow_run_id:
        status.tracking = TrackingStatus(mlflow_run_id=summary.mlflow_run_id)
    return StatusUpdate(status, _events(previous, status, message))


def _restarts(previous: dict[str, Any], obs: Observation) -> int:
    """Never fewer than recorded. A new trainer pod running where another one ran is a
    restart even if the old pod left no trace: an evicted or preempted pod is deleted, and
    usually gone before any reconcile could count it as failed."""
    recorded = int(previous.get("restarts") or 0)
    last_pod = previous.get("podName")
    replaced = bool(obs.pod and last_pod and obs.pod != last_pod)
    return max(obs.restarts, recorded + 1 if replaced else recorded)


def _checkpoint(
    summary: TerminationMessage | None,
    progress: TrainerProgress | None,
    output: OutputSpec,
    previous: dict[str, Any] | None,
    departed: CheckpointRef | None = None,
) -> CheckpointStatus | None:
    """The newest checkpoint known: the recorded one, the trainer's last word (of a pod
    still there, or of one deleted since, as on suspend), or the one its metrics report."""
    candidates = []
    if previous:
        candidates.append(CheckpointStatus.model_validate(previous))
    if departed is not None:
        candidates.append(CheckpointStatus(step=departed.step, uri=departed.uri))
    if summary is not None and summary.checkpoint is not None:
        candidates.append(
            CheckpointStatus(step=summary.checkpoint.step, uri=summary.checkpoint.uri)
        )
    if progress is not None and progress.checkpoint_step:
        step = progress.checkpoint_step
        candidates.append(CheckpointStatus(step=step, uri=output.uri(f"checkpoint-{step}")))
    return max(candidates, key=lambda c: c.step) if candidates else None


def _output(summary: TerminationMessage) -> OutputStatus:
    """The artifacts the trainer reports having written (a location it left empty is not
    written at all)."""
    written: dict[str, object] = {
        "adapterUri": summary.adapter_uri,
        "mergedUri": summary.merged_uri,
    }
    if summary.final_model is not None:
        written["finalModelStep"] = summary.final_model.step
        written["finalModelSelection"] = summary.final_model.selection
    return OutputStatus.model_validate({k: v for k, v in written.items() if v is not None})


def _events(previous: dict[str, Any], status: FineTuneJobStatus, message: str) -> list[Event]:
    """The Events that announce ``status`` over ``previous``; ``message`` is the phase's
    (the Event's own limit bounds it)."""
    events = []
    phase, reason = status.phase, status.reason
    changed = (previous.get("phase"), previous.get("reason")) != (phase, reason)
    if changed and reason not in _PASSING_REASONS:
        kind = "Warning" if phase == Phase.FAILED or reason not in _NORMAL_REASONS else "Normal"
        events.append(Event(kind, str(reason), f"{phase}: {message}"))
    restarts = status.restarts or 0
    if restarts > int(previous.get("restarts") or 0):
        events.append(Event("Warning", Reason.RESTARTED, f"trainer restarted (restart {restarts})"))
    old_ckpt = (previous.get("checkpoint") or {}).get("step")
    new = status.checkpoint
    if new is not None and new.step != old_ckpt:
        events.append(
            Event("Normal", Reason.CHECKPOINT, f"checkpoint at step {new.step}: {new.uri}")
        )
    return events


# Milestones worth an Event when the run reaches them.
_NORMAL_REASONS = {Reason.RUNNING, Reason.SUSPENDED, Reason.WAITING_FOR_QUEUE, Reason.SUCCEEDED}
# Steps every run passes through within seconds: the status says them, an Event each would
# only add objects (and API writes) nobody reads.
_PASSING_REASONS = {
    Reason.CREATING_JOB,
    Reason.WAITING_FOR_POD,
    Reason.CONTAINER_CREATING,
    Reason.COMPLETING,
}
