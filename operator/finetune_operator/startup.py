"""A trainer pod that cannot start: its container waits in a state that only a change
outside the pod ends (a missing Secret or key, an image that cannot be pulled), holding
the GPU it was scheduled with. Past spec.lifecycle.startupDeadlineSeconds the operator
deletes its Job and fails the FineTuneJob; this module says when, and with what message.

The kubelet names only the object (``secret "x" not found``); the message names the spec
fields that point at it and the fix. Pure: the inputs are the spec and the pod as a dict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from finetune_api.config import S3CredentialsRef
from finetune_api.safe_text import EVENT_MESSAGE_LIMIT, safe_text
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import Reason

from .naming import TRAINER_CONTAINER
from .timeutil import parse_time

# Waiting reasons the kubelet retries forever without anything changing in the pod.
STARTUP_FAILURES: frozenset[str] = frozenset(
    {
        Reason.CREATE_CONTAINER_CONFIG_ERROR,
        Reason.CREATE_CONTAINER_ERROR,
        Reason.ERR_IMAGE_PULL,
        Reason.IMAGE_PULL_BACK_OFF,
        Reason.INVALID_IMAGE_NAME,
    }
)
_IMAGE_FAILURES = frozenset(
    {Reason.ERR_IMAGE_PULL, Reason.IMAGE_PULL_BACK_OFF, Reason.INVALID_IMAGE_NAME}
)

# The kubelet's messages for a missing object or key (pkg/kubelet/kubelet_pods.go).
_NOT_FOUND = re.compile(r'\b(?P<kind>secret|configmap)s? "(?P<name>[^"]+)" not found')
_NO_KEY = re.compile(
    r"couldn't find key (?P<key>\S+) in (?P<kind>Secret|ConfigMap) (?P<ns>[^/\s]+)/(?P<name>\S+)"
)

RECREATE = "then delete and re-create the FineTuneJob"


@dataclass(frozen=True)
class StuckStart:
    """A trainer pod whose container cannot start, and since when it has been trying."""

    pod_name: str
    pod_uid: str
    reason: str  # the kubelet's waiting reason
    detail: str  # the kubelet's message
    since: datetime | None  # None: the pod says nothing usable (the caller remembers)


def _waiting(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            return dict((status.get("state") or {}).get("waiting") or {})
    return {}


def _since(pod: dict[str, Any]) -> datetime | None:
    """When the kubelet began trying: the pod's binding (PodScheduled), not its creation,
    so time spent waiting for a free GPU does not count; the later of the two."""
    times = [parse_time(pod["metadata"].get("creationTimestamp"))]
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            times.append(parse_time(cond.get("lastTransitionTime")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def stuck_start(pod: dict[str, Any] | None) -> StuckStart | None:
    """The pod's stuck start, when its trainer container waits in one of STARTUP_FAILURES."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return None
    if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
        return None
    waiting = _waiting(pod)
    reason = waiting.get("reason")
    if reason not in STARTUP_FAILURES:
        return None
    return StuckStart(
        pod_name=str(pod["metadata"].get("name") or ""),
        pod_uid=str(pod["metadata"].get("uid") or ""),
        reason=str(reason),
        detail=safe_text(waiting.get("message") or "", EVENT_MESSAGE_LIMIT),
        since=_since(pod),
    )


def mount_wait(pod: dict[str, Any] | None) -> StuckStart | None:
    """A pod the kubelet cannot give a volume (the operator found the dataset ConfigMap
    missing): the kubelet says so only in Events, its container stays ContainerCreating."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return None
    return StuckStart(
        pod_name=str(pod["metadata"].get("name") or ""),
        pod_uid=str(pod["metadata"].get("uid") or ""),
        reason=Reason.CONTAINER_CREATING,
        detail="",
        since=_since(pod),
    )


def deadline(since: datetime, spec: FineTuneJobSpec) -> datetime:
    return since + timedelta(seconds=spec.lifecycle.startup_deadline_seconds)


def _secret_refs(spec: FineTuneJobSpec) -> list[tuple[str, str, dict[str, str]]]:
    """(spec field, Secret name, {key's spec field: key}) of every Secret the spec names
    for the trainer's environment."""
    refs: list[tuple[str, str, dict[str, str]]] = []
    token = spec.model.token_secret_ref
    if token is not None:
        field = "spec.model.tokenSecretRef"
        refs.append((field, token.name, {f"{field}.key": token.key}))
    for part, location in (
        ("model", spec.model.s3),
        ("dataset", spec.dataset.s3),
        ("output", spec.output.s3),
        ("dataset.eval", spec.dataset.eval.s3 if spec.dataset.eval is not None else None),
    ):
        creds: S3CredentialsRef | None = location.credentials_secret_ref if location else None
        if creds is None:
            continue
        field = f"spec.{part}.s3.credentialsSecretRef"
        keys = {
            f"{field}.accessKeyIdKey": creds.access_key_id_key,
            f"{field}.secretAccessKeyKey": creds.secret_access_key_key,
        }
        if creds.session_token_key is not None:
            keys[f"{field}.sessionTokenKey"] = creds.session_token_key
        refs.append((field, creds.name, keys))
    return refs


def _config_fix(spec: FineTuneJobSpec, namespace: str, detail: str) -> str | None:
    """The spec fields behind a missing Secret, ConfigMap or key, and the fix; None when
    the kubelet's message names nothing the spec points at."""
    refs = _secret_refs(spec)
    config_maps = spec.dataset.config_maps
    missing_key = _NO_KEY.search(detail)
    if missing_key:
        kind, name, key = missing_key["kind"], missing_key["name"], missing_key["key"]
        if kind == "Secret":
            fields = [f for _, n, keys in refs if n == name for f, k in keys.items() if k == key]
        else:
            fields = [
                f"spec.{field}.key"
                for field, ref in config_maps
                if (ref.name, ref.key) == (name, key)
            ]
        if fields:
            return (
                f"{' and '.join(fields)}: {kind} {name} in namespace {namespace} has no key "
                f"{key}; add the key to the {kind}, or name the key it has, {RECREATE}"
            )
        return None
    not_found = _NOT_FOUND.search(detail)
    if not_found:
        name = not_found["name"]
        if not_found["kind"] == "secret":
            kind = "Secret"
            fields = [f"{field}.name" for field, n, _ in refs if n == name]
        else:
            kind = "ConfigMap"
            fields = [f"spec.{field}.name" for field, ref in config_maps if ref.name == name]
        if fields:
            return (
                f"{' and '.join(fields)}: {kind} {name} does not exist in namespace "
                f"{namespace}; create it (or correct the name), {RECREATE}"
            )
    return None


def _image_fix(spec: FineTuneJobSpec, default_image: str) -> str:
    if spec.image:
        return (
            f"spec.image: the trainer image {spec.image} cannot be pulled; correct spec.image "
            f"(or, for a private registry, name its pull Secret in spec.imagePullSecrets), "
            f"{RECREATE}"
        )
    return (
        f"spec.image is unset, and the operator's default trainer image {default_image} (the "
        "chart's trainer.image values) cannot be pulled; set spec.image to an image the nodes "
        f"can pull, {RECREATE}, or have the operator's installation fix trainer.image"
    )


def startup_failure_message(
    spec: FineTuneJobSpec,
    stuck: StuckStart,
    namespace: str,
    default_image: str,
    *,
    fix: str | None = None,
) -> str:
    """The status message of a FineTuneJob whose trainer could not start: what the spec
    should say instead (``fix``, when the operator found it itself), then what the kubelet
    said (bounded)."""
    if fix is None and stuck.reason in _IMAGE_FAILURES:
        fix = _image_fix(spec, default_image)
    elif fix is None:
        fix = _config_fix(spec, namespace, stuck.detail) or (
            "check the Secrets and keys the spec names (spec.model.tokenSecretRef, "
            "spec.model.s3, spec.dataset.s3, spec.output.s3 and spec.dataset.eval.s3 "
            "credentialsSecretRef), "
            f"{RECREATE}"
        )
    seconds = spec.lifecycle.startup_deadline_seconds
    kubelet = f"{stuck.reason}: {stuck.detail}" if stuck.detail else stuck.reason
    return (
        f"{fix}. The trainer pod {stuck.pod_name} could not start within "
        f"spec.lifecycle.startupDeadlineSeconds ({seconds}s); its Job was deleted to free "
        f"the GPU (kubelet: {kubelet})"
    )
