"""The few Kubernetes API calls the operator makes, on plain dicts.

Objects travel as the JSON the API server speaks (camelCase dicts), not as the client's
generated model classes, so the pure builders and observers work on exactly what is sent
and received. The operator's RBAC is the list of calls in this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from finetune_api import GROUP, PLURAL, VERSION

from .adoption import adoption_problem
from .naming import CHILD_SELECTOR

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
# Objects per page when listing, so a list never holds the whole cluster at once (nor
# much of what tenants can make large: a pod's annotations alone may hold 256 KiB).
_PAGE = 100
# The API server's metadata-only form of a list (what kubectl get uses for its tables).
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


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


def _unless_absent(read: Callable[[], Any]) -> Obj | None:
    """The object ``read`` returns, or None when the API server says there is none."""
    try:
        return _data(read())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class Kube:
    """API access for one operator process (thread-safe: the client pools connections).

    Every call carries a client-side ``(connect, read)`` timeout: a silent API server must
    cost a reconcile seconds, not hang a worker forever (``load_api_client`` also turns on
    TCP keepalive, so a dead peer is noticed on idle pooled connections)."""

    def __init__(
        self, api_client: client.ApiClient, *, timeout: tuple[float, float] = (5.0, 30.0)
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- children -----------------------------------------------------------------------
    def ensure(self, obj: Obj, owner_uid: str) -> tuple[Obj, bool]:
        """Create ``obj`` (a Job) unless it exists. Returns (object, created).
        An existing object is taken only when it is exactly what the operator would have
        made for this FineTuneJob (adoption.py), which makes the create idempotent without
        letting anyone plant a child; anything else is a ChildConflict."""
        kind, meta = obj["kind"], obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            if kind != "Job":
                raise ValueError(f"cannot create {kind}")
            created = self.batch.create_namespaced_job(
                namespace, obj, _preload_content=False, _request_timeout=self.timeout
            )
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
        existing = self.get_job(namespace, name)
        if existing is None:
            raise ChildConflict(f"{kind} {namespace}/{name} exists but could not be read")
        problem = adoption_problem(obj, existing, owner_uid)
        if problem:
            raise ChildConflict(conflict_message(kind, namespace, name, problem))
        return existing, False

    def get_job(self, namespace: str, name: str) -> Obj | None:
        return _unless_absent(
            lambda: self.batch.read_namespaced_job(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        )

    def get_config_map(self, namespace: str, name: str) -> Obj | None:
        return _unless_absent(
            lambda: self.core.read_namespaced_config_map(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        )

    def get_persistent_volume_claim(self, namespace: str, name: str) -> Obj | None:
        return _unless_absent(
            lambda: self.core.read_namespaced_persistent_volume_claim(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        )

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Job and, through the garbage collector, its pods: Background, so the
        Job is gone at once and its pods (and the GPUs they hold) right after. The uid
        precondition keeps a Job made since under the same name; a Job already gone is
        fine."""
        try:
            self.batch.delete_namespaced_job(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    propagation_policy="Background",
                    preconditions=client.V1Preconditions(uid=uid),
                ),
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete a trainer pod with its grace period (the trainer checkpoints on SIGTERM
        if it can); its Job starts another. The uid precondition keeps a pod made since
        under the same name; a pod already gone is fine."""
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch a Job; returns it as the API server stored it."""
        return _data(
            self.batch.patch_namespaced_job(
                name, namespace, patch, _preload_content=False, _request_timeout=self.timeout
            )
        )

    def list_children(self, namespace: str | None) -> Iterator[Obj]:
        """Every Job and pod labelled as a FineTuneJob's child, in ``namespace`` (None: all
        namespaces), a page at a time, each with its kind (list items carry none)."""
        for kind in ("Job", "Pod"):
            for items, _version in self.list_pages(kind, namespace):
                yield from items

    def list_pages(
        self, kind: str, namespace: str | None, *, metadata_only: bool = False
    ) -> Iterator[tuple[list[Obj], str]]:
        """Every FineTuneJob, or every labelled Job or pod (``kind``), in ``namespace``
        (None: all namespaces), a page at a time: the page's objects, each with its kind,
        and the resourceVersion of the listing (every page is of the same snapshot; an
        empty listing is one empty page).

        ``metadata_only``: each object's metadata alone, from the API server's watch cache
        (resourceVersion 0: not from etcd, and a few hundred bytes an object, however
        large a tenant made its pods)."""
        lists = {
            "FineTuneJob": (self._list_finetunejobs, self._list_all_finetunejobs, None),
            "Job": (
                self.batch.list_namespaced_job,
                self.batch.list_job_for_all_namespaces,
                CHILD_SELECTOR,
            ),
            "Pod": (
                self.core.list_namespaced_pod,
                self.core.list_pod_for_all_namespaces,
                CHILD_SELECTOR,
            ),
        }
        namespaced, everywhere, selector = lists[kind]
        token, snapshot = None, ""
        while True:
            query: dict[str, Any] = {
                "limit": _PAGE,
                "_preload_content": False,
                "_request_timeout": self.timeout,
            }
            if metadata_only:
                query["_headers"] = {"Accept": _METADATA_LIST}
                if not token:
                    query["resource_version"] = "0"
            if selector:
                query["label_selector"] = selector
            if token:
                query["_continue"] = token
            page = _data(namespaced(namespace, **query) if namespace else everywhere(**query))
            listing = page.get("metadata") or {}
            snapshot = snapshot or str(listing.get("resourceVersion") or "")
            yield [{**item, "kind": kind} for item in page.get("items") or []], snapshot
            token = listing.get("continue")
            if not token:
                break

    def _list_finetunejobs(self, namespace: str, **query: Any) -> Any:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **query)

    def _list_all_finetunejobs(self, **query: Any) -> Any:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **query)

    # --- the FineTuneJob ----------------------------------------------------------------
    def patch_status(self, body: Obj, status: Obj) -> Obj | None:
        """Merge-patch status, guarded by the resourceVersion the status was computed from.
        Returns the FineTuneJob as stored, or None on a conflict (someone else wrote
        first, or it is gone): the caller recomputes from a newer version.
        Raises StatusRejected when the API server refuses the status itself."""
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            response = self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                patch,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            if exc.status in (400, 422):
                raise StatusRejected(_api_message(exc)) from exc
            raise
        return _data(response)

    # --- events -------------------------------------------------------------------------
    def create_event(self, namespace: str, event: Obj) -> str | None:
        """Create a core/v1 Event; its name, or None when it could not be posted (Events
        are best effort: a lost one must never block reconciliation)."""
        try:
            response = self.core.create_namespaced_event(
                namespace, event, _preload_content=False, _request_timeout=self.timeout
            )
        except (ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
            log.warning("could not post event %s: %s", event.get("reason"), _reason(exc))
            return None
        return str(_data(response)["metadata"]["name"])

    def patch_event(self, namespace: str, name: str, patch: Obj) -> bool:
        """Update a posted Event (its count); False when that did not work."""
        try:
            self.core.patch_namespaced_event(
                name, namespace, patch, _preload_content=False, _request_timeout=self.timeout
            )
        except (ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
            log.debug("could not update event %s: %s", name, _reason(exc))
            return False
        return True


def conflict_message(kind: str, namespace: str, name: str, problem: str) -> str:
    return (
        f"{kind} {namespace}/{name} already exists and is not what the operator would make "
        f"for this FineTuneJob ({problem}): someone else made it, so it is not used. "
        f"Find out who, delete that {kind}, and re-create the FineTuneJob (its children are "
        "named after its new uid)"
    )


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or type(exc).__name__)
