"""Level-based reconciliation of one FineTuneJob: make the children exist, keep the Job's
lifecycle fields in step with the spec, and write the status that the world implies.

Every trigger (the FineTuneJob changed, its Job or a pod changed, the progress timer
fired, the operator restarted) calls the same ``reconcile``; it reads the current state
and converges, so a trigger that runs twice, or is missed, does no harm.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from finetune_trainer.config import describe_errors

from .api.spec import FineTuneJobSpec, output_problems
from .api.status import TERMINAL_PHASES
from .builders import (
    Owner,
    build_config_map,
    build_job,
    lifecycle_patch,
    resolved_trainer_config,
)
from .config import OperatorConfig
from .kube import ChildConflict, ChildDeferred, ChildRejected, Kube, Obj, StatusRejected
from .metrics import OperatorMetrics
from .observe import observe
from .policy import policy_problems
from .progress import scrape
from .status_update import (
    StatusUpdate,
    failed_status,
    invalid_spec_status,
    kept_outcome,
    next_status,
    status_rejected_status,
    waiting_status,
)
from .timeutil import Clock, rfc3339, utcnow

log = logging.getLogger(__name__)

_CONFLICT_RETRIES = 5


def parse_spec(body: Obj) -> tuple[FineTuneJobSpec | None, list[str]]:
    """The typed spec, or the list of problems (each naming the field and the fix)."""
    try:
        return FineTuneJobSpec.model_validate(body.get("spec") or {}), []
    except ValidationError as exc:
        return None, describe_errors(exc, prefix="spec")


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        *,
        clock: Clock = utcnow,
        scraper: Callable[..., Any] = scrape,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.scraper = scraper
        self.metrics = metrics or OperatorMetrics()
        # One lock per FineTuneJob, for as long as a reconcile holds or awaits it: a lock
        # no thread refers to any more drops out by itself, so deleted FineTuneJobs leave
        # none behind, and a thread still waiting keeps the same lock as a newcomer.
        self._locks: weakref.WeakValueDictionary[tuple[str, str], threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._unfinished: set[tuple[str, str]] = set()
        self._phases: dict[tuple[str, str], str] = {}
        self._guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop everything kept about a FineTuneJob that no longer exists. Under its lock,
        so a reconcile already under way cannot count it again after this."""
        with self._lock(namespace, name):
            self._drop(namespace, name)

    def _drop(self, namespace: str, name: str) -> None:
        with self._guard:
            self._unfinished.discard((namespace, name))
            self._phases.pop((namespace, name), None)
            self.metrics.set_phases(self._phases.values())

    def unfinished(self) -> list[tuple[str, str]]:
        """FineTuneJobs last seen Pending, Running or Suspended (for the progress poller)."""
        with self._guard:
            return sorted(self._unfinished)

    def _remember(self, namespace: str, name: str, phase: str) -> None:
        with self._guard:
            if phase in TERMINAL_PHASES:
                self._unfinished.discard((namespace, name))
            else:
                self._unfinished.add((namespace, name))
            self._phases[(namespace, name)] = phase
            self.metrics.set_phases(self._phases.values())

    def reconcile(self, namespace: str, name: str, *, poll_metrics: bool = False) -> str | None:
        """Converge one FineTuneJob; returns its phase (None when it no longer exists)."""
        with self.metrics.reconcile_seconds.time(), self._lock(namespace, name):
            try:
                phase = self._reconcile(namespace, name, poll_metrics)
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                # Event handlers are not retried: the progress poller comes back to it.
                with self._guard:
                    self._unfinished.add((namespace, name))
                raise
            if phase is None:
                self._drop(namespace, name)
            else:
                self._remember(namespace, name, phase)
            return phase

    def _reconcile(self, namespace: str, name: str, poll_metrics: bool) -> str | None:
        """The phase the FineTuneJob's status holds afterwards; None only when it is gone."""
        recorded = "Pending"
        for _ in range(_CONFLICT_RETRIES):
            body = self.kube.get_finetunejob(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            previous = body.get("status") or {}
            recorded = previous.get("phase") or "Pending"
            update = self._converge(body, poll_metrics=poll_metrics)
            if not update.changed_from(previous):
                self.metrics.reconciles.labels("ok").inc()
                return str(update.status.get("phase"))
            try:
                written = self.kube.patch_status(body, update.status)
            except StatusRejected as exc:
                # Retrying the same status would fail the same way on every trigger and
                # leave the FineTuneJob frozen: say so on the status instead.
                log.error("%s/%s: the API server rejected the status: %s", namespace, name, exc)
                update = status_rejected_status(
                    previous, str(exc), body["metadata"].get("generation"), self.clock()
                )
                if not update.changed_from(previous):
                    return str(update.status.get("phase"))
                try:
                    written = self.kube.patch_status(body, update.status)
                except StatusRejected as again:
                    log.error(
                        "%s/%s: even the fallback status was rejected: %s",
                        namespace,
                        name,
                        again,
                    )
                    return recorded
            if written:
                self.metrics.reconciles.labels("ok").inc()
                self.metrics.status_writes.inc()
                now = rfc3339(self.clock())
                for event in update.events:
                    self.kube.post_event(body, event.type, event.reason, event.message, now)
                    self.metrics.events.labels(event.type, event.reason).inc()
                log.info(
                    "%s/%s: %s (%s)",
                    namespace,
                    name,
                    update.status.get("phase"),
                    update.status.get("reason"),
                )
                return str(update.status.get("phase"))
        log.warning(
            "%s/%s: status kept conflicting; will retry on the next trigger", namespace, name
        )
        return recorded

    def _converge(self, body: Obj, *, poll_metrics: bool) -> StatusUpdate:
        previous: dict[str, Any] = body.get("status") or {}
        generation = body["metadata"].get("generation")
        now = self.clock()
        spec, problems = parse_spec(body)
        if spec is None:
            return invalid_spec_status(previous, problems, generation, now)
        owner = Owner.from_body(body)
        queued = bool(spec.scheduling.queue_name)

        job = self.kube.get_job(owner.namespace, owner.child_name)
        going = job is None or bool(job["metadata"].get("deletionTimestamp"))
        if going and previous.get("phase") in TERMINAL_PHASES:
            # The finished Job is cleaned up (ttlSecondsAfterFinished deletes it in the
            # foreground: pods first, so the trainer's message is gone before the Job).
            return kept_outcome(previous, generation)
        if job is None and previous.get("jobName"):
            # The Job existed and is gone before its outcome was recorded (deleted by hand,
            # or cleaned up while the operator was down). Creating it again could start a
            # second trainer on the same output while the first is still stopping, or
            # retrain a run that had already used up its retries.
            return failed_status(
                previous,
                "JobDeleted",
                f"the Job {previous['jobName']} was deleted before it finished; delete and "
                "re-create the FineTuneJob to train again (with the same output location, "
                "an output.pvc.path or output.s3 prefix, it resumes from the newest "
                "checkpoint there)",
                generation,
                now,
            )
        if job is None:
            # Only a Job still to be created needs durable output: a FineTuneJob admitted
            # before the API server required it may already have its Job, and that run is
            # reported on as usual.
            problems = output_problems(spec)
            if problems:
                return invalid_spec_status(previous, problems, generation, now)
            not_allowed = policy_problems(spec, self.config)
            if not_allowed:
                return failed_status(
                    previous, "NotAllowed", "; ".join(not_allowed), generation, now
                )
            try:
                job = self._create_children(spec, owner)
            except ChildConflict as exc:
                # Not the spec's fault: another object holds the child's name.
                return failed_status(previous, "ChildConflict", str(exc), generation, now)
            except ChildRejected as exc:
                return failed_status(previous, "JobRejected", str(exc), generation, now)
            except ChildDeferred as exc:
                # Pending keeps it on the poller's list, which tries the create again.
                message = f"{exc}; the Job is created once the quota allows it"
                return waiting_status(previous, "QuotaExceeded", message, generation, now)
        else:
            self._sync_lifecycle(
                job, spec, queued, outcome_recorded=previous.get("phase") in TERMINAL_PHASES
            )

        pods = self.kube.list_trainer_pods(owner.namespace, owner.uid)
        observation = observe(job, pods, queued=queued)
        if observation.reason == "ContainerCreating":
            missing = self._missing_dataset_config_map(spec, owner.namespace)
            if missing:
                observation = replace(
                    observation, reason="DatasetConfigMapMissing", message=missing
                )
        progress = None
        if poll_metrics and observation.running_pod_ip:
            progress = self.scraper(
                observation.running_pod_ip, timeout=self.config.metrics_timeout_seconds
            )
        return next_status(
            previous,
            observation=observation,
            progress=progress,
            output=resolved_trainer_config(spec, owner).output,
            job_name=owner.child_name,
            config_map_name=owner.child_name,
            generation=generation,
            now=now,
        )

    def _create_children(self, spec: FineTuneJobSpec, owner: Owner) -> Obj:
        # The ConfigMap first: the Job's pod mounts it.
        self.kube.ensure(build_config_map(spec, owner), owner.uid)
        job, created = self.kube.ensure(build_job(spec, owner, self.config), owner.uid)
        if created:
            self.metrics.jobs_created.inc()
            log.info("%s/%s: created Job %s", owner.namespace, owner.name, owner.child_name)
        return job

    def _missing_dataset_config_map(self, spec: FineTuneJobSpec, namespace: str) -> str | None:
        """Why the pod cannot mount dataset.configMap, when that is why it is not starting.
        The kubelet retries the mount and reports it only as an Event, so without this the
        FineTuneJob would say "starting" until someone creates the ConfigMap."""
        source = spec.dataset.config_map
        if source is None:
            return None
        found = self.kube.get_config_map(namespace, source.name)
        if found is None:
            return (
                f"dataset.configMap: ConfigMap {source.name} does not exist in namespace "
                f"{namespace}; create it (the trainer starts once it exists)"
            )
        keys = sorted({*(found.get("data") or {}), *(found.get("binaryData") or {})})
        if source.key not in keys:
            return (
                f"dataset.configMap: ConfigMap {source.name} has no key {source.key} (its keys: "
                f"{', '.join(keys) or 'none'}); add it (the trainer starts once it exists)"
            )
        return None

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
            self.kube.patch_job(meta["namespace"], meta["name"], {"spec": patch})
            job["spec"] = {**current, **{k: v for k, v in patch.items() if v is not None}}
            log.info("%s: Job lifecycle updated: %s", meta["name"], patch)


def _finished(job: Obj) -> bool:
    """Whether the Job's outcome is decided (FailureTarget: failing, its pods stopping)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        kind = cond.get("type")
        if kind in ("Complete", "Failed", "FailureTarget") and cond.get("status") == "True":
            return True
    return False
