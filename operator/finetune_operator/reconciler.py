"""Level-based reconciliation of one FineTuneJob: make the children exist, keep the Job's
lifecycle fields in step with the spec, and write the status that the world implies.

Every trigger (the FineTuneJob changed, its Job or a pod changed, the trainer's metrics
changed, the operator restarted) queues the same ``reconcile``; it reads the current state
from the watch cache and converges, so a trigger that runs twice, or is missed, does no
harm, and a FineTuneJob that nothing happens to costs no API request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from finetune_api.config import describe_errors
from finetune_api.safe_text import LOG_LIMIT, safe_text
from finetune_api.spec import FineTuneJobSpec, output_problems
from finetune_api.status import TERMINAL_PHASES, Phase, Reason

from .adoption import adoption_problem, controlled_by
from .builders import (
    Owner,
    build_job,
    lifecycle_patch,
    resolved_trainer_config,
)
from .cache import ClusterCache
from .config import OperatorConfig
from .events import EventRecorder
from .kube import (
    ChildConflict,
    ChildDeferred,
    ChildRejected,
    Kube,
    Obj,
    StatusRejected,
    conflict_message,
)
from .metrics import OperatorMetrics
from .observe import Observation, observe
from .policy import policy_problems
from .progress import ProgressBoard
from .references import AFTER_JOB, dataset_config_map_problem, missing_reference
from .stall import StallCheck, check_progress
from .startup import RECREATE, deadline, mount_wait, startup_failure_message, stuck_start
from .status_update import (
    StatusUpdate,
    failed_status,
    invalid_spec_status,
    kept_outcome,
    next_status,
    readable_status,
    status_rejected_status,
    unchanged,
    waiting_status,
)
from .timeutil import Clock, rfc3339, utcnow
from .workqueue import DONE, GONE, Outcome

log = logging.getLogger(__name__)

# A status write that met a newer version comes back when the watch delivers that
# version; this is the fallback should the event be lost.
# How soon a Job the operator failed to delete (its trainer cannot start) is tried again.
_DELETE_RETRY_SECONDS = 30.0
_CONFLICT_RETRY_SECONDS = 5.0
# Jobs created by this process that are remembered as its own: far more than are created
# between a Job's creation and the status write that records it.
_MADE_REMEMBERED = 10_000
# Pods whose stuck start was first seen here (only for a pod whose own timestamps do not
# say when it was scheduled): far more than are stuck at once.
_STUCK_REMEMBERED = 10_000
# Past a startup deadline, the reconcile that acts on it comes this much later: the
# timestamps are to the second.
_DEADLINE_MARGIN_SECONDS = 1.0


def parse_spec(body: Obj) -> tuple[FineTuneJobSpec | None, list[str]]:
    """The typed spec, or the list of problems (each naming the field and the fix)."""
    try:
        return FineTuneJobSpec.model_validate(body.get("spec") or {}), []
    except ValidationError as exc:
        return None, describe_errors(exc, prefix="spec")


@dataclass
class Convergence:
    """What one pass over a FineTuneJob decided: the status it should have, and when to
    look again without an event (None: only when something changes)."""

    update: StatusUpdate
    retry_after: float | None = None
    backoff: bool = False  # come back after the work queue's growing delay
    created: str | None = None  # the Job this pass created
    # The Job to delete (namespace, name, uid) once the status that says why is recorded.
    delete_job: tuple[str, str, str] | None = None
    # The trainer pod to delete (namespace, name, uid), likewise: a stall with onStall:
    # Restart.
    delete_pod: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class _Pass:
    """What one pass over a FineTuneJob knows before it decides anything."""

    previous: dict[str, Any]  # the stored status, as readable_status reads it
    generation: int | None
    now: datetime

    def failed(self, reason: Reason, message: str) -> Convergence:
        return Convergence(failed_status(self.previous, reason, message, self.generation, self.now))


class Reconciler:
    """Converges one FineTuneJob at a time from what the cache holds. The work queue makes
    sure no FineTuneJob is reconciled by two threads at once, so there are no locks here."""

    def __init__(
        self,
        kube: Kube,
        cache: ClusterCache,
        config: OperatorConfig,
        *,
        clock: Clock = utcnow,
        progress: ProgressBoard | None = None,
        metrics: OperatorMetrics | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.config = config
        self.clock = clock
        self.progress = progress if progress is not None else ProgressBoard()
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.events = events if events is not None else EventRecorder(kube)
        # Uids of the Jobs this process created, newest last.
        self._made: OrderedDict[str, None] = OrderedDict()
        # Pod uid -> when this process first saw its start stuck, oldest first.
        self._stuck_seen: OrderedDict[str, datetime] = OrderedDict()

    def reconcile(self, key: Hashable) -> Outcome:
        """Converge one FineTuneJob, keyed (namespace, name)."""
        namespace, name = str(key[0]), str(key[1])  # type: ignore[index]
        with self.metrics.reconcile_seconds.time():
            try:
                outcome = self._reconcile(namespace, name)
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                raise
        return outcome

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        """Drop what is kept about a deleted FineTuneJob."""
        self.progress.forget((namespace, name))
        if uid:
            self.events.forget(uid)

    def _reconcile(self, namespace: str, name: str) -> Outcome:
        body = self.cache.finetunejob(namespace, name)
        if body is None:
            # Gone (its children's deletions still queue it): nothing to keep about it.
            self.progress.forget((namespace, name))
            return GONE
        if body["metadata"].get("deletionTimestamp"):
            self.progress.forget((namespace, name))
            return DONE
        stored = body.get("status")
        stored = stored if isinstance(stored, dict) else {}
        previous = readable_status(stored)
        step = self._converge(body, previous)
        later = Outcome(retry_after=step.retry_after, backoff=step.backoff)
        update = step.update
        unreadable = {k: v for k, v in stored.items() if k not in previous}
        update.unreadable = unreadable
        if step.created:
            # Said now, whatever becomes of the status write: the next reconcile finds the
            # Job in place and would not say it.
            self.events.record(
                body,
                "Normal",
                Reason.JOB_CREATED,
                f"created Job {step.created}",
                rfc3339(self.clock()),
            )
        if not update.changed_from(stored):
            self.metrics.reconciles.labels("ok").inc()
            if not (self._delete_job(step, body) and self._delete_pod(step, body)):
                return Outcome(retry_after=_DELETE_RETRY_SECONDS)
            return later
        try:
            written = self.kube.patch_status(body, update.patch)
        except StatusRejected as exc:
            # Retrying the same status would fail the same way on every trigger and leave
            # the FineTuneJob frozen: say so on the status instead.
            log.error(
                "%s/%s: the API server rejected the status: %s",
                namespace,
                name,
                safe_text(exc, LOG_LIMIT),
            )
            update = status_rejected_status(
                previous, str(exc), body["metadata"].get("generation"), self.clock()
            )
            update.unreadable = unreadable
            if not update.changed_from(stored):
                return later
            try:
                written = self.kube.patch_status(body, update.patch)
            except StatusRejected as again:
                log.error(
                    "%s/%s: even the fallback status was rejected: %s",
                    namespace,
                    name,
                    safe_text(again, LOG_LIMIT),
                )
                return later
        if written is None:
            # Someone wrote the FineTuneJob after the version in the cache: the watch brings
            # the newer one, which queues it again; the retry is a fallback.
            self.metrics.reconciles.labels("conflict").inc()
            return Outcome(retry_after=_CONFLICT_RETRY_SECONDS)
        self.cache.record_write(written, f"the status of FineTuneJob {namespace}/{name}")
        self.metrics.reconciles.labels("ok").inc()
        self.metrics.status_writes.inc()
        phase = update.status.phase
        if phase in TERMINAL_PHASES and previous.get("phase") != phase:
            self.metrics.finished.labels(str(phase)).inc()
        now = rfc3339(self.clock())
        for event in update.events:
            self.events.record(body, event.type, event.reason, event.message, now)
        log.info(
            "%s/%s: %s (%s)",
            namespace,
            name,
            update.status.phase,
            safe_text(update.status.reason, LOG_LIMIT),
        )
        # Only now, and only when the outcome written is the one that calls for it: with
        # it recorded, the Job's disappearance is not mistaken for a Job deleted before it
        # finished (a status refused and replaced by StatusRejected deletes nothing).
        if update is step.update and not (
            self._delete_job(step, body) and self._delete_pod(step, body)
        ):
            return Outcome(retry_after=_DELETE_RETRY_SECONDS)
        return later

    def _delete_job(self, step: Convergence, body: Obj) -> bool:
        """Delete the Job the step gives up on; False (said in the log and an Event) when
        the API server refuses or does not answer, so the pass is tried again."""
        if step.delete_job is None:
            return True
        namespace, name, uid = step.delete_job
        try:
            self.kube.delete_job(namespace, name, uid)
        except Exception as exc:  # an API error or a timeout: the Job keeps its GPU
            why = safe_text(exc, LOG_LIMIT)
            log.error("%s: could not delete Job %s: %s", namespace, name, why)
            self.events.record(
                body,
                "Warning",
                Reason.STARTUP_FAILED,
                f"could not delete Job {name}, whose trainer cannot start, so it still holds "
                f"its GPU: {why}; the operator needs the delete verb on jobs (the chart's "
                "RBAC grants it) and tries again",
                rfc3339(self.clock()),
            )
            return False
        log.info("%s: deleted Job %s, whose trainer could not start", namespace, name)
        return True

    def _delete_pod(self, step: Convergence, body: Obj) -> bool:
        """Delete the stalled trainer pod the step restarts; False (said in the log and an
        Event) when the API server refuses or does not answer, so the pass is tried
        again."""
        if step.delete_pod is None:
            return True
        namespace, name, uid = step.delete_pod
        try:
            self.kube.delete_pod(namespace, name, uid)
        except Exception as exc:  # an API error or a timeout: the stalled trainer stays
            why = safe_text(exc, LOG_LIMIT)
            log.error("%s: could not delete stalled trainer pod %s: %s", namespace, name, why)
            self.events.record(
                body,
                "Warning",
                Reason.PROGRESS_DEADLINE_EXCEEDED,
                f"could not delete trainer pod {name}, which makes no progress: {why}; the "
                "operator needs the delete verb on pods (the chart's RBAC grants it) and "
                "tries again",
                rfc3339(self.clock()),
            )
            return False
        log.info("%s: deleted trainer pod %s, which made no progress", namespace, name)
        return True

    # --- one pass, step by step: a step that settles the status ends the pass ------------

    def _converge(self, body: Obj, previous: dict[str, Any]) -> Convergence:
        """Decide the status of one FineTuneJob, creating or adjusting its Job on the way:
        the spec must parse; a Job of another owner, or one gone, settles the status; a
        missing Job is admitted and created, an existing one adopted (or refused) and its
        lifecycle kept in step with the spec; then the Job and its pods are observed."""
        this_pass = _Pass(previous, body["metadata"].get("generation"), self.clock())
        spec, problems = parse_spec(body)
        if spec is None:
            return Convergence(
                invalid_spec_status(previous, problems, this_pass.generation, this_pass.now)
            )
        owner = Owner.from_body(body)
        job = self.cache.job(owner.namespace, owner.child_name)
        settled = (
            _job_of_another_owner(job, owner, this_pass)
            or _job_gone(job, this_pass)
            or _startup_failure_recorded(job, this_pass)
        )
        if settled is not None:
            return settled
        created = False
        if job is None:
            made = self._admit_and_create(spec, owner, this_pass)
            if isinstance(made, Convergence):
                return made
            job, created = made
        else:
            settled = self._refuse_unadoptable(job, spec, owner, this_pass)
            if settled is not None:
                return settled
            self._sync_lifecycle(
                job,
                spec,
                bool(spec.scheduling.queue_name),
                outcome_recorded=previous.get("phase") in TERMINAL_PHASES,
            )
        return self._observed_status(job, spec, owner, this_pass, created=created)

    def _admit_and_create(
        self, spec: FineTuneJobSpec, owner: Owner, this_pass: _Pass
    ) -> tuple[Obj, bool] | Convergence:
        """Create the Job of a spec the API server's rules and the operator's policy admit:
        the Job and whether this pass made it, or the status that says why there is none."""
        # Only a Job still to be created needs durable output: a FineTuneJob admitted
        # before the API server required it may already have its Job, and that run is
        # reported on as usual.
        problems = output_problems(spec)
        if problems:
            return Convergence(
                invalid_spec_status(
                    this_pass.previous, problems, this_pass.generation, this_pass.now
                )
            )
        not_allowed = policy_problems(spec, self.config)
        if not_allowed:
            return this_pass.failed(Reason.NOT_ALLOWED, "; ".join(not_allowed))
        missing = missing_reference(spec, owner.namespace, self.kube)
        if missing is not None:
            # No Job: its pod would hold a GPU while it waits. ConfigMaps and claims are not
            # watched (a watch would stream every one in the cluster to the operator): look
            # again after a growing delay.
            return Convergence(
                waiting_status(
                    this_pass.previous,
                    missing.reason,
                    missing.message,
                    this_pass.generation,
                    this_pass.now,
                ),
                backoff=True,
            )
        try:
            return self._create_children(spec, owner)
        except ChildConflict as exc:
            # Not the spec's fault: another object holds the child's name.
            return this_pass.failed(Reason.CHILD_CONFLICT, str(exc))
        except ChildRejected as exc:
            return this_pass.failed(Reason.JOB_REJECTED, str(exc))
        except ChildDeferred as exc:
            # Pending, tried again after a growing delay, until the quota allows it.
            message = f"{exc}; the Job is created once the quota allows it"
            return Convergence(
                waiting_status(
                    this_pass.previous,
                    Reason.QUOTA_EXCEEDED,
                    message,
                    this_pass.generation,
                    this_pass.now,
                ),
                backoff=True,
            )

    def _refuse_unadoptable(
        self, job: Obj, spec: FineTuneJobSpec, owner: Owner, this_pass: _Pass
    ) -> Convergence | None:
        """None when the Job is this FineTuneJob's own to report on; else the status that
        refuses it. The first time a FineTuneJob meets its Job without having made it in
        this process (the operator restarted between creating it and recording it, or
        someone else made it), it adopts it only if it is what the operator would have
        made, judged on the whole Job (the cache keeps only the parts the operator reads; a
        planted selector or managedBy is not among them)."""
        if this_pass.previous.get("jobName") or job["metadata"].get("uid") in self._made:
            return None
        whole = self.kube.get_job(owner.namespace, owner.child_name)
        if whole is None:  # deleted meanwhile: its watch event follows
            return Convergence(unchanged(), retry_after=_CONFLICT_RETRY_SECONDS)
        problem = adoption_problem(build_job(spec, owner, self.config), whole, owner.uid)
        if problem:
            message = conflict_message("Job", owner.namespace, owner.child_name, problem)
            return this_pass.failed(Reason.CHILD_CONFLICT, message)
        return None

    def _observed_status(
        self, job: Obj, spec: FineTuneJobSpec, owner: Owner, this_pass: _Pass, *, created: bool
    ) -> Convergence:
        """The status that the Job, its pods and the trainer's metrics imply."""
        observation, waiting_outside = self._observe(job, spec, owner)
        stuck = self._stuck_start(job, spec, owner, observation, this_pass)
        if isinstance(stuck, Convergence):
            return stuck
        key = (owner.namespace, owner.name)
        if observation.running_pod_uid is None:
            self.progress.forget(key)
        progress = self.progress.reading(key, observation.running_pod_uid)
        update = next_status(
            this_pass.previous,
            observation=observation,
            progress=progress,
            output=resolved_trainer_config(spec, owner).output,
            job_name=owner.child_name,
            generation=this_pass.generation,
            now=this_pass.now,
        )
        stall = self._progress_deadline(job, spec, owner, observation, update, this_pass)
        retry_after = stuck
        if stall is not None and stall.retry_after is not None:
            retry_after = min(stall.retry_after, stuck or stall.retry_after)
        return Convergence(
            stall.update if stall is not None else update,
            retry_after=retry_after,
            backoff=waiting_outside,
            created=owner.child_name if created else None,
            delete_pod=stall.delete_pod if stall is not None else None,
        )

    def _progress_deadline(
        self,
        job: Obj,
        spec: FineTuneJobSpec,
        owner: Owner,
        observation: Observation,
        update: StatusUpdate,
        this_pass: _Pass,
    ) -> StallCheck | None:
        """For a Running trainer: Stalled past spec.lifecycle.progressDeadlineSeconds (its
        pod to be deleted with onStall: Restart), else when the deadline falls due
        (stall.py); None for a run that is not training."""
        uid = observation.running_pod_uid
        if observation.phase != Phase.RUNNING or uid is None:
            return None
        pods = [p for p in self.cache.trainer_pods(owner.uid) if p["metadata"].get("uid") == uid]
        if not pods:
            return None
        return check_progress(
            update,
            previous=this_pass.previous,
            lifecycle=spec.lifecycle,
            job=job,
            pod=pods[0],
            watch=self.progress.watch((owner.namespace, owner.name), uid),
            generation=this_pass.generation,
            now=this_pass.now,
        )

    def _stuck_start(
        self,
        job: Obj,
        spec: FineTuneJobSpec,
        owner: Owner,
        observation: Observation,
        this_pass: _Pass,
    ) -> Convergence | float | None:
        """For a trainer that cannot start: past spec.lifecycle.startupDeadlineSeconds, the
        failed status (its Job to be deleted); before it, the seconds until then (the pod
        may not change again, so nothing else would bring the FineTuneJob back)."""
        if observation.phase != Phase.PENDING or observation.pod is None:
            return None
        pods = [p for p in self.cache.trainer_pods(owner.uid) if _named(p, observation.pod)]
        pod = pods[0] if pods else None
        if observation.reason == Reason.DATASET_CONFIG_MAP_MISSING:
            # Bound to a node, its GPU held, while the kubelet retries the mount.
            stuck = mount_wait(pod)
        else:
            stuck = stuck_start(pod)
        if stuck is None:
            if pod is not None:  # pulling or mounting again: a later error starts afresh
                self._stuck_seen.pop(str(pod["metadata"].get("uid") or ""), None)
            return None
        # Counted from when this operator first saw the trainer stuck (and from its binding
        # at the earliest): a large image that pulls for many minutes and then meets one
        # registry error is judged on how long the error lasts, not on the pull.
        first_seen = self._stuck_seen.setdefault(stuck.pod_uid, this_pass.now)
        while len(self._stuck_seen) > _STUCK_REMEMBERED:
            self._stuck_seen.popitem(last=False)
        since = max(first_seen, stuck.since) if stuck.since is not None else first_seen
        due = deadline(since, spec)
        if this_pass.now < due:
            left = (due - this_pass.now) / timedelta(seconds=1)
            return left + _DEADLINE_MARGIN_SECONDS
        self._stuck_seen.pop(stuck.pod_uid, None)
        fix = None
        if observation.reason == Reason.DATASET_CONFIG_MAP_MISSING:
            fix = dataset_config_map_problem(spec, owner.namespace, self.kube, RECREATE)
            if fix is None:  # created meanwhile: the mount goes through
                return None
        message = startup_failure_message(
            spec, stuck, owner.namespace, self.config.trainer_image, fix=fix
        )
        failed = this_pass.failed(Reason.STARTUP_FAILED, message)
        failed.delete_job = (owner.namespace, owner.child_name, str(job["metadata"]["uid"]))
        return failed

    def _observe(self, job: Obj, spec: FineTuneJobSpec, owner: Owner) -> tuple[Observation, bool]:
        """What the Job and its pods say, and whether the run waits on something outside
        the cluster's watches (then the status is looked at again after a growing delay)."""
        queued = bool(spec.scheduling.queue_name)
        observation = observe(
            job,
            self.cache.trainer_pods(owner.uid),
            queued=queued,
            departed=self.cache.departed_trainer(owner.uid),
        )
        if observation.reason != Reason.CONTAINER_CREATING:
            return observation, False
        missing = dataset_config_map_problem(spec, owner.namespace, self.kube, AFTER_JOB)
        if not missing:
            return observation, False
        # Deleted after the Job was created (the kubelet retries the mount and says why
        # only in an Event). ConfigMaps are not watched: look again after a growing delay,
        # so a message about a ConfigMap that now exists does not stay.
        missing_map = replace(
            observation, reason=Reason.DATASET_CONFIG_MAP_MISSING, message=missing
        )
        return missing_map, True

    def _create_children(self, spec: FineTuneJobSpec, owner: Owner) -> tuple[Obj, bool]:
        job, created = self.kube.ensure(build_job(spec, owner, self.config), owner.uid)
        self.cache.record_write(job, f"Job {owner.namespace}/{owner.child_name}")
        if created:
            # Made here, as built: never judged for adoption, even once Kueue has added its
            # flavor's nodeSelector and tolerations and the status write that records it
            # failed.
            self._made[str(job["metadata"].get("uid"))] = None
            while len(self._made) > _MADE_REMEMBERED:
                self._made.popitem(last=False)
            self.metrics.jobs_created.inc()
            log.info("%s/%s: created Job %s", owner.namespace, owner.name, owner.child_name)
        return job, created

    def _sync_lifecycle(
        self, job: Obj, spec: FineTuneJobSpec, queued: bool, *, outcome_recorded: bool
    ) -> None:
        """Carry spec.lifecycle edits (suspend, retries, deadline, TTL) over to the Job."""
        current = job.get("spec") or {}
        wanted = lifecycle_patch(spec.lifecycle, queued=queued, outcome_recorded=outcome_recorded)
        if _finished(job):
            # Only the clean-up delay still means something for a finished Job.
            wanted = {"ttlSecondsAfterFinished": wanted["ttlSecondsAfterFinished"]}
        patch = {k: v for k, v in wanted.items() if current.get(k) != v}
        if patch:
            meta = job["metadata"]
            stored = self.kube.patch_job(meta["namespace"], meta["name"], {"spec": patch})
            self.cache.record_write(stored, f"Job {meta['namespace']}/{meta['name']}")
            job["spec"] = {**current, **{k: v for k, v in patch.items() if v is not None}}
            log.info("%s: Job lifecycle updated: %s", meta["name"], patch)


def _job_of_another_owner(job: Obj | None, owner: Owner, this_pass: _Pass) -> Convergence | None:
    """Failed with ChildConflict when a Job holds the child's name but is not controlled
    by this FineTuneJob. The name hashes this FineTuneJob's uid: such a Job was made by
    someone else, and is never taken as its own."""
    if job is None or controlled_by(job, owner.uid):
        return None
    message = conflict_message(
        "Job", owner.namespace, owner.child_name, "it is not controlled by this FineTuneJob"
    )
    return this_pass.failed(Reason.CHILD_CONFLICT, message)


def _job_gone(job: Obj | None, this_pass: _Pass) -> Convergence | None:
    """The status when the Job is gone or going: a recorded outcome stays, a Job deleted
    before its outcome was recorded fails the FineTuneJob; None while it is there (or was
    never made)."""
    previous = this_pass.previous
    going = job is None or bool(job["metadata"].get("deletionTimestamp"))
    if going and previous.get("phase") in TERMINAL_PHASES:
        # The finished Job is cleaned up (ttlSecondsAfterFinished deletes it in the
        # foreground: pods first, so the trainer's message is gone before the Job).
        return Convergence(kept_outcome(previous, this_pass.generation))
    if job is None and previous.get("jobName"):
        # The Job existed and is gone before its outcome was recorded (deleted by hand, or
        # cleaned up while the operator was down). Creating it again could start a second
        # trainer on the same output while the first is still stopping, or retrain a run
        # that had already used up its retries.
        return this_pass.failed(
            Reason.JOB_DELETED,
            f"the Job {previous['jobName']} was deleted before it finished; delete and "
            "re-create the FineTuneJob to train again (with the same output location, an "
            "output.pvc.path or output.s3 prefix, it resumes from the newest checkpoint "
            "there)",
        )
    return None


def _startup_failure_recorded(job: Obj | None, this_pass: _Pass) -> Convergence | None:
    """A Job whose trainer could not start, kept after its outcome was recorded (the
    deletion failed, or the watch has not brought it yet): delete it again, and the
    outcome stays."""
    previous = this_pass.previous
    if job is None or job["metadata"].get("deletionTimestamp"):
        return None
    if (previous.get("phase"), previous.get("reason")) != (Phase.FAILED, Reason.STARTUP_FAILED):
        return None
    meta = job["metadata"]
    return Convergence(
        kept_outcome(previous, this_pass.generation),
        delete_job=(meta["namespace"], meta["name"], str(meta["uid"])),
    )


def _named(pod: Obj, name: str) -> bool:
    return bool(pod["metadata"].get("name") == name)


def _finished(job: Obj) -> bool:
    """Whether the Job's outcome is decided (FailureTarget: failing, its pods stopping)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        kind = cond.get("type")
        if kind in ("Complete", "Failed", "FailureTarget") and cond.get("status") == "True":
            return True
    return False
