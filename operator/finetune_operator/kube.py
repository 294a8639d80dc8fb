"""The few Kubernetes API calls the operator makes, on plain dicts.

Objects travel as the JSON the API server speaks (camelCase dicts), not as the client's
generated model classes, so the pure builders and observers work on exactly what is sent
and received. The operator's RBAC is the list of calls in this module.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .api import GROUP, PLURAL, VERSION
from .naming import LABEL_OWNER_UID

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class ChildConflict(Exception):
    """An object with the child's deterministic name exists but belongs to someone else."""


class ChildRejected(Exception):
    """The API server refused to create a child (validation, admission, quota): retrying
    the same object cannot succeed, so the message goes to the FineTuneJob's status."""


class ChildDeferred(Exception):
    """The API server refused to create a child for now: a ResourceQuota in the namespace
    is used up. The same create succeeds once the quota allows it, so it is retried."""


class StatusRejected(Exception):
    """The API server refused a status patch as invalid: writing the same status again
    cannot succeed, so the caller must write something else instead of retrying."""


# Status codes of a create that the same request will always meet again.
_REJECTED = (400, 403, 422)
# ResourceQuota admission's refusals, which a later create may not meet.
_QUOTA_MESSAGES = ("exceeded quota", "status unknown for quota")


def _api_message(exc: ApiException) -> str:
    """The API server's own message (its Status object), else the HTTP reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or exc.status)


def _data(response: Any) -> Obj:
    result: Obj = json.loads(response.data)
    return result


class Kube:
    """API access for one operator process (thread-safe: the client pools connections)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- children -----------------------------------------------------------------------
    def ensure(self, obj: Obj, owner_uid: str) -> tuple[Obj, bool]:
        """Create ``obj`` (a ConfigMap or Job) unless it exists. Returns (object, created).
        An existing object owned by this FineTuneJob counts as success, which makes the
        create handler idempotent."""
        kind, meta = obj["kind"], obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            if kind == "Job":
                created = self.batch.create_namespaced_job(namespace, obj, _preload_content=False)
            elif kind == "ConfigMap":
                created = self.core.create_namespaced_config_map(
                    namespace, obj, _preload_content=False
                )
            else:
                raise ValueError(f"cannot create {kind}")
            return _data(created), True
        except ApiException as exc:
            if exc.status == 403 and any(m in _api_message(exc) for m in _QUOTA_MESSAGES):
                # ResourceQuota answers 403 too, but only until something else finishes
                # (or, for a quota just created, until its usage has been counted).
                raise ChildDeferred(
                    f"{kind} {namespace}/{name} does not fit the namespace's ResourceQuota: "
                    f"{_api_message(exc)}"
                ) from exc
            if exc.status in _REJECTED:
                raise ChildRejected(
                    f"the API server rejected {kind} {namespace}/{name}: {_api_message(exc)}"
                ) from exc
            if exc.status != 409:
                raise
        existing = (
            self.get_job(namespace, name) if kind == "Job" else self.get_config_map(namespace, name)
        )
        if existing is None:
            raise ChildConflict(f"{kind} {namespace}/{name} exists but could not be read")
        owners = [r.get("uid") for r in existing["metadata"].get("ownerReferences") or []]
        if owner_uid not in owners:
            raise ChildConflict(
                f"{kind} {namespace}/{name} already exists and is not owned by this "
                "FineTuneJob; delete it or rename the FineTuneJob"
            )
        return existing, False

    def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return _data(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_config_map(self, namespace: str, name: str) -> Obj | None:
        try:
            return _data(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_job(self, namespace: str, name: str, patch: Obj) -> None:
        self.batch.patch_namespaced_job(name, namespace, patch)

    def list_trainer_pods(self, namespace: str, owner_uid: str) -> list[Obj]:
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_OWNER_UID}={owner_uid}", _preload_content=False
        )
        items: list[Obj] = _data(response).get("items", [])
        return items

    # --- the FineTuneJob ----------------------------------------------------------------
    def get_finetunejob(self, namespace: str, name: str) -> Obj | None:
        try:
            return _data(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, body: Obj, status: Obj) -> bool:
        """Merge-patch status, guarded by the resourceVersion the status was computed from.
        Returns False on a conflict (someone else wrote first): the caller recomputes.
        Raises StatusRejected when the API server refuses the status itself."""
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            if exc.status in (400, 422):
                raise StatusRejected(_api_message(exc)) from exc
            raise
        return True

    # --- events -------------------------------------------------------------------------
    def post_event(self, body: Obj, kind: str, reason: str, message: str, now: str) -> None:
        """A core/v1 Event on the FineTuneJob. Best effort: a lost event must never block
        reconciliation."""
        meta = body["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "finetune-operator"},
            "reportingComponent": "finetune.dev/operator",
            "reportingInstance": "finetune-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc.reason)
