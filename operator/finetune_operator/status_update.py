"""Compute a FineTuneJob's next status and the Events that announce the change. Pure: the
handlers gather the inputs (the Job, its pods, the trainer's metrics) and write the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from finetune_api.config import OutputSpec
from finetune_api.contract import TrainerProgress
from finetune_api.safe_text import MESSAGE_LIMIT, safe_text
from finetune_api.status import MAX_SHORT, MAX_URI, TERMINAL_PHASES

from .conditions import conditions_for_phase
from .observe import Observation
from .progress import progress_status
from .timeutil import rfc3339


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class StatusUpdate:
    """A status to write, with the Events that announce it. Every string in it is made safe
    here, in the one place every status passes through (safe_text.py): whatever a trainer,
    a ConfigMap's keys or an API server's refusal put in a message, the status stays within
    the CRD's limits and free of terminal escapes."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = _bounded(self.status)

    def changed_from(self, previous: dict[str, Any]) -> bool:
        """Whether the status is worth a write: something other than the fields that
        ride along (written with the next change, not on their own) differs."""
        return any(previous.get(k) != v for k, v in self.status.items() if k not in _RIDE_ALONG)


# Facts every run gains within seconds of its Job's creation (the Job controller's start
# time, the new pod's name): on their own they would cost a status write each for every
# FineTuneJob, so they are written with the next change of phase, reason or progress. A
# replaced pod is a restart, and that change writes its name.
_RIDE_ALONG = frozenset({"startTime", "podName"})


def _limit(key: str) -> int:
    if key == "message":
        return MESSAGE_LIMIT
    if key.endswith("Uri") or key == "uri":
        return MAX_URI
    return MAX_SHORT


def _bounded(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        return safe_text(value, _limit(key))
    if isinstance(value, dict):
        return {k: _bounded(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v, key) for v in value]
    return value


def _found_status(
    previous: dict[str, Any],
    phase: str,
    reason: str,
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
    status = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "conditions": conditions_for_phase(
            phase,
            reason,
            message,
            generation,
            previous.get("conditions"),
            rfc3339(now),
            stalled=stalled,
        ),
        "completionTime": completion_time,
    }
    events = []
    if previous.get("reason") != reason:
        events.append(Event("Warning", reason, message))
    return StatusUpdate(status, events)


def failed_status(
    previous: dict[str, Any],
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> StatusUpdate:
    """Failed for a reason the operator found itself, with a Warning Event."""
    completion = previous.get("completionTime") or rfc3339(now)
    return _found_status(previous, "Failed", reason, message, generation, now, completion)


def waiting_status(
    previous: dict[str, Any],
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> StatusUpdate:
    """Pending for a reason the operator found itself and that clears by itself (a quota
    that is used up): still Reconciling, as while a pod waits for a GPU, so GitOps tools
    show it progressing rather than failed; a Warning Event, and no outcome."""
    return _found_status(previous, "Pending", reason, message, generation, now, None, stalled=False)


def invalid_spec_status(
    previous: dict[str, Any], problems: list[str], generation: int | None, now: datetime
) -> StatusUpdate:
    """A spec the schema rejects: Failed, with every problem named, and no Job created."""
    return failed_status(
        previous, "InvalidSpec", "invalid spec: " + "; ".join(problems), generation, now
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
    phase = previous.get("phase") or "Pending"
    # Only an outcome already recorded has a completion time.
    completion = previous.get("completionTime") if phase in TERMINAL_PHASES else None
    return _found_status(previous, phase, "StatusRejected", message, generation, now, completion)


def kept_outcome(previous: dict[str, Any], generation: int | None) -> StatusUpdate:
    """A finished FineTuneJob whose Job is gone (ttlSecondsAfterFinished): the outcome stays
    as it was, and a later spec edit is acknowledged so GitOps tools see it observed."""
    status = dict(previous)
    status["observedGeneration"] = generation
    status["conditions"] = [
        {**condition, "observedGeneration": generation}
        for condition in previous.get("conditions") or []
    ]
    return StatusUpdate(status)


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
    obs = observation
    recorded = (
        previous.get("phase") in TERMINAL_PHASES
        and obs.phase == previous.get("phase")
        and previous.get("reason") != "StatusRejected"  # not an outcome: replace it
    )
    if recorded and not obs.termination_text:
        # The outcome is recorded and the Job is still finished, but the trainer's pods are
        # gone: the Job's clean-up deletes them before the Job, so a read in between sees
        # only the Job's own, vaguer reason. What the trainer said stays on record.
        return kept_outcome(previous, generation)
    stamp = rfc3339(now)
    status: dict[str, Any] = {
        "phase": obs.phase,
        "reason": obs.reason,
        "message": obs.message,
        "observedGeneration": generation,
        "jobName": job_name,
        "restarts": _restarts(previous, obs),
        "conditions": conditions_for_phase(
            obs.phase, obs.reason, obs.message, generation, previous.get("conditions"), stamp
        ),
    }
    if obs.phase == "Suspended":
        # Resuming starts a new pod, which is no restart (null removes the name).
        status["podName"] = None
    elif obs.pod:
        status["podName"] = obs.pod
    if obs.start_time:
        status["startTime"] = obs.start_time
    if obs.phase not in TERMINAL_PHASES:
        # A run that is not over has no completion time, even if an earlier status said
        # otherwise (null removes it in the merge patch).
        status["completionTime"] = None
    elif obs.completion_time:
        status["completionTime"] = obs.completion_time

    live = progress_status(progress, previous.get("progress"), now) if progress else None
    summary = obs.termination
    if summary is not None and obs.phase in ("Succeeded", "Failed", "Pending", "Suspended"):
        final = TrainerProgress(
            step=summary.step, total_steps=summary.total_steps, loss=summary.loss
        )
        live = progress_status(final, previous.get("progress"), now) or live
    if live is not None:
        if obs.phase == "Succeeded":
            live["etaSeconds"] = 0
        status["progress"] = live

    checkpoint = _checkpoint(summary, progress, output, previous.get("checkpoint"))
    if checkpoint is not None:
        status["checkpoint"] = checkpoint
    if summary is not None and (summary.adapter_uri or summary.merged_uri):
        status["output"] = {
            k: v
            for k, v in {"adapterUri": summary.adapter_uri, "mergedUri": summary.merged_uri}.items()
            if v
        }
    return StatusUpdate(status, _events(previous, status))


def _restarts(previous: dict[str, Any], obs: Observation) -> int:
    """Never fewer than recorded. A new trainer pod running where another one ran is a
    restart even if the old pod left no trace: an evicted or preempted pod is deleted, and
    usually gone before any reconcile could count it as failed."""
    recorded = int(previous.get("restarts") or 0)
    last_pod = previous.get("podName")
    replaced = bool(obs.pod and last_pod and obs.pod != last_pod)
    return max(obs.restarts, recorded + 1 if replaced else recorded)


def _checkpoint(
    summary: Any, progress: TrainerProgress | None, output: OutputSpec, previous: Any
) -> dict[str, Any] | None:
    candidates = []
    if previous:
        candidates.append(previous)
    if summary is not None and summary.checkpoint is not None:
        candidates.append({"step": summary.checkpoint.step, "uri": summary.checkpoint.uri})
    if progress is not None and progress.checkpoint_step:
        step = progress.checkpoint_step
        candidates.append({"step": step, "uri": output.uri(f"checkpoint-{step}")})
    return max(candidates, key=lambda c: int(c["step"])) if candidates else None


def _events(previous: dict[str, Any], status: dict[str, Any]) -> list[Event]:
    events = []
    phase, reason = status["phase"], status["reason"]
    changed = (previous.get("phase"), previous.get("reason")) != (phase, reason)
    if changed and reason not in _PASSING_REASONS:
        kind = "Warning" if phase == "Failed" or reason not in _NORMAL_REASONS else "Normal"
        events.append(Event(kind, reason, f"{phase}: {status['message']}"))
    if status.get("restarts", 0) > int(previous.get("restarts") or 0):
        events.append(
            Event("Warning", "Restarted", f"trainer restarted (restart {status['restarts']})")
        )
    old_ckpt = (previous.get("checkpoint") or {}).get("step")
    new_ckpt = (status.get("checkpoint") or {}).get("step")
    if new_ckpt is not None and new_ckpt != old_ckpt:
        events.append(
            Event(
                "Normal",
                "Checkpoint",
                f"checkpoint at step {new_ckpt}: {status['checkpoint']['uri']}",
            )
        )
    return events


# Milestones worth an Event when the run reaches them.
_NORMAL_REASONS = {"Running", "Suspended", "WaitingForQueue", "Succeeded"}
# Steps every run passes through within seconds: the status says them, an Event each would
# only add objects (and API writes) nobody reads.
_PASSING_REASONS = {
    "CreatingJob",
    "WaitingForPod",
    "ContainerCreating",
    "Completing",
}
