"""kopf handlers: they feed the watch cache and queue FineTuneJobs for reconciling.

- At start-up, before any watch delivers anything, the operator lists its Jobs and pods
  once into the cache, so after a restart the first reconcile of every FineTuneJob already
  sees its Job (and creates nothing, writes nothing).
- Event handlers put every FineTuneJob, labelled Job and labelled pod the watches deliver
  into the cache (deleted ones out), and queue the FineTuneJob the event concerns (a Job
  or pod by its owner label). They are async and make no API call, so no event waits
  behind a slow one.
- The work queue's threads reconcile; the progress poller reads trainers' metrics in the
  event loop; a slow periodic listing catches what a broken watch missed (resync.py); the
  liveness probe reports on them (health.py).

None of them keeps state in the FineTuneJob beyond ``status``: no finalizer (children go
with their owner through garbage collection) and no spec edits, so GitOps tools see no
drift.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from finetune_api import GROUP, PLURAL, VERSION

from .cache import owner_key
from .config import OperatorConfig
from .naming import CHILD_SELECTOR, LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY
from .operator_runtime import OperatorRuntime

log = logging.getLogger(__name__)

# The children the operator watches (the job and pod handlers below), as (group, version,
# plural); naming.CHILD_SELECTOR selects them on the API server.
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("", "v1", "pods"))


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base serves change handlers (on.create, on.update, ...), and the operator
    registers none: every event goes to the same reconcile. kopf still builds one for each
    event it processes (a deep copy of the object, and a diff against the last one), which
    was a third of the operator's CPU in a burst of FineTuneJobs; this one is empty."""

    def build(self, *, body: Any, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: Any, patch: Any, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Settings for one operator process, from OperatorConfig."""
    # Only event handlers are registered, and kopf adds a finalizer or progress annotations
    # for none of them; should a kopf version write either, it is named under the API's
    # group rather than kopf's.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Our own Events say what happened; kopf's per-handler log events would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = config.watch_server_timeout_seconds
    settings.watching.client_timeout = config.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    # Every request kopf makes has a total deadline; a watch that delivers nothing (not
    # even the API server's bookmark, sent about every minute) is reconnected.
    settings.networking.request_timeout = 60
    settings.watching.inactivity_timeout = 90
    # The initial listing a page at a time: thousands of pods at once would be one
    # response of tens of megabytes (more, if tenants fill their pods' annotations), held
    # whole while it is parsed.
    settings.watching.chunk_size = 100
    # One replica with a Recreate strategy: no peering objects (and no RBAC for them).
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # Watch exactly the configured namespaces; no namespace or CRD scanning (less RBAC).
    settings.scanning.disabled = True
    # Filter Jobs and pods on the API server: without it every pod and Job in the watched
    # namespaces streams to the operator only to be dropped by the handlers' label filters.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = CHILD_SELECTOR


def register(registry: kopf.OperatorRegistry, runtime: OperatorRuntime) -> None:
    """Register the handlers into ``registry`` (kopf's default one for ``kopf run``)."""
    config, cache, queue = runtime.config, runtime.cache, runtime.queue
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(id="configure", registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, config)

    @kopf.on.startup(id="start-workers", registry=registry)
    async def start_workers(**_: Any) -> None:
        # kopf opens the watches once the start-up handlers are done: the cache holds every
        # child before the first event of a FineTuneJob can queue it.
        await asyncio.get_running_loop().run_in_executor(None, runtime.prime_cache)
        runtime.events.start()
        queue.start()
        tasks.append(asyncio.create_task(runtime.poller.run(), name="progress-poller"))
        tasks.append(asyncio.create_task(runtime.resync.run(), name="resync"))

    @kopf.on.cleanup(id="stop-workers", registry=registry)
    async def stop_workers(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, queue.stop)
        await asyncio.get_running_loop().run_in_executor(None, runtime.events.stop)

    @kopf.on.probe(id="health", errors=kopf.ErrorsMode.PERMANENT, registry=registry)
    def health(**_: Any) -> dict[str, object]:
        problems = runtime.health.problems()
        if problems:
            # kopf answers the liveness probe with an error for a failed probe handler.
            raise kopf.PermanentError("; ".join(problems))
        return runtime.health.report()

    children: dict[str, Any] = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER: kopf.PRESENT,
    }

    # Literal resource names: the chart's RBAC test reads the watches from this source.
    @kopf.on.event(GROUP, VERSION, PLURAL, id="finetunejob", registry=registry)
    async def finetunejob_changed(type: str, body: Any, **_: Any) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if type == "DELETED":
            cache.remove(body)
            runtime.forget(meta["namespace"], meta["name"], meta.get("uid"))
            return
        cache.upsert(body)
        # One that has no Job yet goes ahead of the status updates of the others.
        queue.add(key, first=not (body.get("status") or {}).get("jobName"))

    @kopf.on.event("batch", "v1", "jobs", labels=children, id="job", registry=registry)
    async def job_changed(type: str, body: Any, **_: Any) -> None:
        _child_changed(runtime, type, body)

    @kopf.on.event("", "v1", "pods", labels=children, id="pod", registry=registry)
    async def pod_changed(type: str, body: Any, **_: Any) -> None:
        _child_changed(runtime, type, body)


def _child_changed(runtime: OperatorRuntime, type: str, body: Any) -> None:
    if type == "DELETED":
        runtime.cache.remove(body)
    else:
        runtime.cache.upsert(body)
    key = owner_key(body)
    if key is not None:
        runtime.queue.add(key)
