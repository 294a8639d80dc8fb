"""Read a Job and its pods into what the FineTuneJob's status should say. Pure: the
inputs are the API objects as dicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from finetune_api.contract import (
    TERMINATION_MESSAGE_LIMIT,
    CheckpointRef,
    ExitCode,
    TerminationMessage,
)
from finetune_api.status import Phase, ProvenanceStatus, Reason

from .naming import TRAINER_CONTAINER
from .provenance import operator_provenance
from .scrape import bounded_number

WAITING_FOR_POD = "waiting for the trainer pod to be created and scheduled"
TRAINING = "training"

# Container waiting reasons worth surfacing while the pod is Pending.
_WAITING_REASONS = {
    Reason.ERR_IMAGE_PULL,
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.INVALID_IMAGE_NAME,
    Reason.CREATE_CONTAINER_CONFIG_ERROR,
    Reason.CREATE_CONTAINER_ERROR,
    Reason.CRASH_LOOP_BACK_OFF,
}


@dataclass(frozen=True)
class Observation:
    """What the Job and its pods say about the run: the phase and reason the status takes,
    and the facts it records."""

    phase: Phase
    reason: str  # a Reason, a TrainerReason, or a Job condition's own
    message: str
    start_time: str | None = None
    completion_time: str | None = None
    restarts: int = 0
    pod: str | None = None  # the newest trainer pod, whatever its phase
    running_pod_uid: str | None = None  # the trainer whose metrics feed status.progress
    # The newest terminated trainer's own summary (or its log tail when it crashed).
    termination: TerminationMessage | None = None
    termination_text: str | None = None
    last_failure: str | None = None  # e.g. "OOMKilled" or "exit code 1"
    # The checkpoint a trainer pod that is gone wrote last (on suspend, on eviction).
    departed_checkpoint: CheckpointRef | None = None
    # The operator's part of status.provenance: the config written, the image run.
    provenance: ProvenanceStatus | None = None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            return dict(status)
    return {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    state = _trainer_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def _newest_terminated(pods: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The trainer pod that terminated last."""
    finished = [p for p in pods if _terminated(p) is not None]
    if not finished:
        return None
    return max(finished, key=lambda p: (_terminated(p) or {}).get("finishedAt") or "")


# The termination message's numbers, and what each is.
_NUMBERS: dict[str, type[int] | type[float]] = {
    "step": int,
    "total_steps": int,
    "loss": float,
    "resumed_from_step": int,
    "eval_loss": float,
    "eval_mean_token_accuracy": float,
}


def _summary(text: str) -> TerminationMessage | None:
    """The trainer's termination message, when ``text`` is one. Whatever the image runs
    writes it, so each number in it is held to the rule of the trainer's metrics (scrape.py):
    NaN, an infinity or a number beyond any run's is dropped, never written to a status
    (the API server would refuse the whole status). Text longer than the kubelet keeps is
    not the kubelet's, and is not parsed."""
    if len(text.encode(errors="replace")) > TERMINATION_MESSAGE_LIMIT:
        return None
    summary = TerminationMessage.decode(text)
    if summary is None:
        return None
    numbers: dict[str, object] = {
        name: bounded_number(value, kind)
        for name, kind in _NUMBERS.items()
        if (value := getattr(summary, name)) is not None
    }
    checkpoint = summary.checkpoint
    if checkpoint is not None and bounded_number(checkpoint.step, int) is None:
        numbers["checkpoint"] = None
    record = summary.provenance
    if record is not None:
        counts = {
            name: bounded_number(value, int)
            for name in ("dataset_rows", "gpu_count")
            if (value := getattr(record, name)) is not None
        }
        numbers["provenance"] = record.model_copy(update=counts)
    final_model = summary.final_model
    if final_model is not None and bounded_number(final_model.step, int) is None:
        numbers["final_model"] = None
    return summary.model_copy(update=numbers)


def _evaluated(summary: TerminationMessage | None) -> str:
    """What a run with an eval set adds to its success message: that it stopped early,
    and which step's weights final_model holds, as the trainer said."""
    if summary is None:
        return ""
    parts = [summary.early_stop] if summary.early_stop else []
    if summary.final_model is not None:
        parts.append(f"final_model: {summary.final_model.selection}")
    return "".join(f"; {part}" for part in parts)


def _disruption(pod: dict[str, Any]) -> str | None:
    """Why the pod was disrupted (evicted, preempted, ...), if it was: the Job's
    podFailurePolicy ignores such a failure, so it does not count against backoffLimit."""
    cond = _condition(pod, "DisruptionTarget")
    if cond is None:
        return None
    return str(cond.get("reason") or "DisruptionTarget")


def _failure_text(pod: dict[str, Any], terminated: dict[str, Any]) -> str:
    disrupted = _disruption(pod)
    if disrupted is not None:
        return f"a disruption ({disrupted}; not counted against spec.lifecycle.backoffLimit)"
    reason = terminated.get("reason") or "Error"
    if reason == "OOMKilled":
        return "OOMKilled (raise spec.resources.memory or lower the batch/sequence length)"
    return f"exit code {terminated.get('exitCode')} ({reason})"


def _pending_reason(pod: dict[str, Any]) -> tuple[str, str]:
    """Why an active pod is not running yet."""
    scheduled = None
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled":
            scheduled = cond
    if scheduled and scheduled.get("status") == "False":
        return scheduled.get("reason") or Reason.UNSCHEDULABLE, scheduled.get("message") or ""
    waiting = (_trainer_status(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _WAITING_REASONS:
        return waiting["reason"], waiting.get("message") or ""
    if scheduled is None:
        # Not yet seen by the scheduler: to the user the same wait as for the pod itself,
        # so the status does not change (and is not written) in between.
        return Reason.WAITING_FOR_POD, WAITING_FOR_POD
    return Reason.CONTAINER_CREATING, "the trainer container is starting"


def _is_live(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in (None, "Pending", "Running")


def _is_active(pod: dict[str, Any]) -> bool:
    return _is_live(pod) and not pod["metadata"].get("deletionTimestamp")


def _controlled_by(pod: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether the Job controller made this pod for this Job. The owner labels the pods are
    listed by can be put on any pod by anyone who may create pods in the namespace; only
    the Job's own pods may say how the run went (termination message, metrics address)."""
    uid = job["metadata"].get("uid")
    return uid is not None and any(
        ref.get("controller") and ref.get("kind") == "Job" and ref.get("uid") == uid
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def _restarts(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> int:
    """Failed trainer pods that were retried, as far as the pods still show. A failure
    counts once a newer attempt exists: until then it may be the last one (bad input,
    backoff limit, deadline). A disrupted pod is deleted and may be gone before its
    replacement exists; the status counts that replacement by its new pod (status_update)."""
    failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    disrupted = sum(1 for p in failed_pods if _condition(p, "DisruptionTarget"))
    # The Job's failed count leaves out the disruptions its podFailurePolicy ignores.
    failed = int((job.get("status") or {}).get("failed") or 0)
    failures = max(failed, len(failed_pods) - disrupted) + disrupted
    retried = any(
        _is_active(p) or (p.get("status") or {}).get("phase") == "Succeeded" for p in pods
    )
    return failures - (0 if retried else min(failures, 1))


def _fails_the_job(
    pod: dict[str, Any], terminated: dict[str, Any], summary: TerminationMessage
) -> bool:
    """Whether this terminated trainer is one the Job's podFailurePolicy fails the Job for:
    bad input, exit 78, and not a disruption (those it ignores, whatever the code)."""
    return (
        summary.status == "invalid_input"
        and terminated.get("exitCode") == ExitCode.INVALID_INPUT
        and not _condition(pod, "DisruptionTarget")
    )


def _created(pod: dict[str, Any]) -> tuple[str, str]:
    """Creation order (the name breaks ties within a second)."""
    return pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]


def _newest_pod(pods: Sequence[dict[str, Any]]) -> str | None:
    """The current attempt's pod, or the last one's: whatever its phase."""
    if not pods:
        return None
    return str(max(pods, key=_created)["metadata"]["name"])


def _departed_checkpoint(
    job: dict[str, Any], departed: dict[str, Any] | None
) -> CheckpointRef | None:
    """The checkpoint a deleted trainer pod of this Job named in its termination message."""
    if departed is None or not _controlled_by(departed, job):
        return None
    text = (_terminated(departed) or {}).get("message")
    summary = _summary(text) if text else None
    return summary.checkpoint if summary is not None else None


def observe(
    job: dict[str, Any] | None,
    pods: Sequence[dict[str, Any]],
    *,
    queued: bool = False,
    departed: dict[str, Any] | None = None,
) -> Observation:
    """``departed``: the trainer pod deleted last after it terminated, for its last word."""
    if job is None:
        return Observation(Phase.PENDING, Reason.CREATING_JOB, "creating the trainer Job")
    pods = [p for p in pods if _controlled_by(p, job)]
    status = job.get("status") or {}
    restarts = _restarts(job, pods)
    last_pod = _newest_terminated(pods)
    newest = _terminated(last_pod) if last_pod else None
    text = (newest or {}).get("message")
    summary = _summary(text) if text else None
    stopped = newest is not None and (newest.get("exitCode") or _disruption(last_pod or {}))
    last_failure = _failure_text(last_pod, newest) if last_pod and newest and stopped else None
    seen = Observation(
        phase=Phase.PENDING,
        reason="",
        message="",
        start_time=status.get("startTime"),
        restarts=restarts,
        pod=_newest_pod(pods),
        termination=summary,
        termination_text=text,
        last_failure=last_failure,
        departed_checkpoint=_departed_checkpoint(job, departed),
        provenance=operator_provenance(job, pods),
    )

    complete = _condition(job, "Complete")
    if complete:
        where = summary.adapter_uri if summary and summary.adapter_uri else "the output location"
        return replace(
            seen,
            phase=Phase.SUCCEEDED,
            reason=Reason.SUCCEEDED,
            message=f"training finished; adapter written to {where}{_evaluated(summary)}",
            completion_time=status.get("completionTime") or complete.get("lastTransitionTime"),
        )
    # FailureTarget comes first: the Job controller has decided the Job fails and is
    # stopping its pods (a trainer past its deadline may still be saving a checkpoint);
    # Failed follows once they are gone. The outcome is known from the first.
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed:
        reason, message = _failure(failed, summary, text, last_failure)
        return replace(
            seen,
            phase=Phase.FAILED,
            reason=reason,
            message=message,
            completion_time=failed.get("lastTransitionTime"),
        )
    active = sorted((p for p in pods if _is_active(p)), key=_created)
    if not active and last_pod and newest and summary and _fails_the_job(last_pod, newest, summary):
        # The Job's podFailurePolicy fails it on this exit code (78) and never retries; the
        # reconcile that the pod's own update triggers comes before the Job says so.
        reason, message = _trainer_outcome(summary)
        return replace(
            seen,
            phase=Phase.FAILED,
            reason=reason,
            message=message,
            completion_time=newest.get("finishedAt"),
        )
    if (job.get("spec") or {}).get("suspend"):
        if queued and not seen.start_time:
            return replace(
                seen,
                phase=Phase.SUSPENDED,
                reason=Reason.WAITING_FOR_QUEUE,
                message="waiting for Kueue to admit the Job",
            )
        # Suspending deletes the pod at once; its trainer is still saving a checkpoint
        # through the grace period, so a pod being deleted counts as stopping.
        message = (
            "suspending: the trainer is writing a checkpoint and stopping"
            if any(_is_live(p) for p in pods)
            else "suspended; set spec.lifecycle.suspend to false to resume from the newest "
            "checkpoint"
        )
        return replace(seen, phase=Phase.SUSPENDED, reason=Reason.SUSPENDED, message=message)
    if active:
        pod = active[-1]
        running = (_trainer_status(pod).get("state") or {}).get("running")
        if running is not None and (pod.get("status") or {}).get("phase") == "Running":
            # The attempt is numbered by the status (status_update), which also counts
            # replaced pods that left no trace.
            return replace(
                seen,
                phase=Phase.RUNNING,
                reason=Reason.RUNNING,
                message=TRAINING,
                running_pod_uid=pod["metadata"].get("uid"),
            )
        reason, message = _pending_reason(pod)
        return replace(seen, reason=reason, message=message)
    if any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
        # The trainer exited 0; the Job controller has not marked the Job Complete yet.
        return replace(
            seen,
            phase=Phase.RUNNING,
            reason=Reason.COMPLETING,
            message="the trainer finished; waiting for the Job to complete",
        )
    if last_pod is not None and _disruption(last_pod) is not None:
        return replace(
            seen,
            reason=Reason.RESTARTING,
            message=f"the trainer pod was disrupted ({_disruption(last_pod)}); the Job starts "
            "another attempt from the newest checkpoint (disruptions do not count against "
            "spec.lifecycle.backoffLimit)",
        )
    if last_failure or restarts:
        return replace(
            seen,
            reason=Reason.RESTARTING,
            message=f"the trainer stopped ({last_failure or 'restart'}); the Job retries from "
            "the newest checkpoint while spec.lifecycle.backoffLimit allows",
        )
    return replace(seen, reason=Reason.WAITING_FOR_POD, message=WAITING_FOR_POD)


def _failure(
    failed: dict[str, Any],
    summary: TerminationMessage | None,
    text: str | None,
    last_failure: str | None,
) -> tuple[str, str]:
    job_reason = failed.get("reason") or Reason.JOB_FAILED
    if summary is not None and summary.status == "invalid_input":
        return _trainer_outcome(summary)
    detail = summary.message if summary and summary.message else (text or "").strip()
    if job_reason == Reason.DEADLINE_EXCEEDED:
        return Reason.DEADLINE_EXCEEDED, (
            "spec.lifecycle.activeDeadlineSeconds passed before training finished"
            + (f"; last trainer message: {detail}" if detail else "")
        )
    if job_reason == Reason.BACKOFF_LIMIT_EXCEEDED:
        return Reason.BACKOFF_LIMIT_EXCEEDED, (
            "the trainer failed more often than spec.lifecycle.backoffLimit allows"
            + (f"; last failure: {last_failure}" if last_failure else "")
            + (f"; {detail}" if detail else "")
        )
    return job_reason, detail or failed.get("message") or "the trainer Job failed"


def _trainer_outcome(summary: TerminationMessage) -> tuple[str, str]:
    """The trainer's own reason and message for how it ended. The termination message is
    written by whatever the image runs, so a reason outside the contract's set is not
    taken as a reason (it stays visible in the message)."""
    reason = str(summary.known_reason)
    if reason == summary.reason:
        return reason, summary.message
    return reason, f"the trainer reported {summary.reason!r}: {summary.message}"
