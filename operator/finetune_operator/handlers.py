"""kopf handlers: thin triggers that all call ``Reconciler.reconcile``.

- any change to a FineTuneJob (and the initial listing when the operator starts, so a
  restarted operator picks every FineTuneJob up again);
- any change to a Job or pod the operator labelled as a FineTuneJob's child;
- a poller that revisits unfinished FineTuneJobs and reads the trainer's metrics.

None of them keeps state in the FineTuneJob beyond ``status``: no finalizer (children go
with their owner through garbage collection) and no spec edits, so GitOps tools see no
drift.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .api import GROUP, PLURAL, VERSION
from .config import OperatorConfig
from .naming import LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY
from .poller import ProgressPoller
from .reconciler import Reconciler

log = logging.getLogger(__name__)

# The children the operator watches (the job and pod handlers below), as (group, version,
# plural), and the labels every one of them carries (naming.child_labels), as a
# server-side label selector.
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("", "v1", "pods"))
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER}"


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Settings for one operator process, from OperatorConfig."""
    prefix = config.annotation_prefix
    settings.persistence.finalizer = config.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    # Our own Events say what happened; kopf's per-handler log events would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = config.watch_server_timeout_seconds
    settings.watching.client_timeout = config.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # One replica with a Recreate strategy: no peering objects (and no RBAC for them).
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # Watch exactly the configured namespaces; no namespace or CRD scanning (less RBAC).
    settings.scanning.disabled = True
    # Filter Jobs and pods on the API server: without it every pod and Job in the watched
    # namespaces streams to the operator only to be dropped by the handlers' label filters.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = CHILD_SELECTOR


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, config: OperatorConfig
) -> None:
    """Register the handlers into ``registry`` (kopf's default one for ``kopf run``)."""

    @kopf.on.startup(id="configure", registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, config)

    @kopf.on.event(GROUP, VERSION, PLURAL, id="finetunejob", registry=registry)
    def finetunejob_changed(type: str, body: Any, **_: Any) -> None:
        meta = body["metadata"]
        if type == "DELETED":
            reconciler.forget(meta["namespace"], meta["name"])
            return
        reconciler.reconcile(meta["namespace"], meta["name"])

    poller = ProgressPoller(reconciler, config.progress_poll_seconds)

    @kopf.on.startup(id="start-progress-poller", registry=registry)
    def start_poller(**_: Any) -> None:
        poller.start()

    @kopf.on.cleanup(id="stop-progress-poller", registry=registry)
    def stop_poller(**_: Any) -> None:
        poller.stop()

    children: dict[str, Any] = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER: kopf.PRESENT,
    }

    # Literal resource names: the chart's RBAC test reads the watches from this source.
    @kopf.on.event("batch", "v1", "jobs", labels=children, id="job", registry=registry)
    def job_changed(body: Any, **_: Any) -> None:
        _owner_changed(reconciler, body)

    @kopf.on.event("", "v1", "pods", labels=children, id="pod", registry=registry)
    def pod_changed(body: Any, **_: Any) -> None:
        _owner_changed(reconciler, body)


def _owner_changed(reconciler: Reconciler, body: Any) -> None:
    meta = body["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_OWNER)
    if owner:
        reconciler.reconcile(meta["namespace"], owner)
