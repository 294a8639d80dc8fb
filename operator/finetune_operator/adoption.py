"""Whether an existing Job may be taken as a FineTuneJob's child. Pure.

Child names are predictable (``<name>-<hash of uid>``), so anyone who may create Jobs in a
namespace could create the child first, with their own training config (output to their
bucket, the victim's credentials sent to their endpoint), while the operator is paused,
restarting or busy. So a Job is adopted only when its controller is the FineTuneJob and its
content is exactly what the operator would have made: its pod template (what it runs,
with which config, volumes, account and Secrets). The API server fills in defaults the
operator never sets; those, and only those, may be added. (The trainer's config rides in
the pod template, so there is no second child, such as a ConfigMap, to plant.)
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from .naming import ANNOTATION_CONFIG_HASH

Obj = dict[str, Any]

# Fields the API server (or an admission plugin) sets on a Job's pod template that the
# operator never sets: their presence says nothing about who made the object.
_SERVER_DEFAULTS = frozenset(
    {
        "dnsPolicy",
        "schedulerName",
        "priority",  # from priorityClassName, by the Priority admission plugin
        "preemptionPolicy",
        "protocol",  # container ports
        "defaultMode",  # configMap and secret volumes
        "apiVersion",  # fieldRef
        "status",  # podFailurePolicy onPodConditions
    }
)
# Maps to which anyone may add entries without changing what the pod does.
_OPEN_MAPS = frozenset({"labels", "annotations"})


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str):
        # Quantities come back canonical ("0.5" is stored as "500m").
        try:
            return bool(parse_quantity(desired) == parse_quantity(live))
        except ValueError:
            return False
    return False


def difference(desired: Any, live: Any, path: str = "") -> str | None:
    """The first place where ``live`` is not what ``desired`` describes, or None."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for key, value in desired.items():
            if key not in live:
                return f"{path}.{key} is missing"
            found = difference(value, live[key], f"{path}.{key}")
            if found:
                return found
        if path.rsplit(".", 1)[-1] in _OPEN_MAPS:
            return None
        extra = sorted(set(live) - set(desired) - _SERVER_DEFAULTS)
        return f"{path}.{extra[0]} is not one the operator sets" if extra else None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return f"{path} has other entries"
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found = difference(want, have, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if _same_scalar(desired, live) else f"{path} differs"


def controlled_by(obj: Obj, owner_uid: str) -> bool:
    return any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def adoption_problem(desired: Obj, live: Obj, owner_uid: str) -> str | None:
    """Why ``live`` (a Job of the child's name) is not this FineTuneJob's child, or None
    when it may be adopted."""
    if not controlled_by(live, owner_uid):
        return "it is not controlled by this FineTuneJob"
    annotations = live["metadata"].get("annotations") or {}
    wanted_hash = desired["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    if annotations.get(ANNOTATION_CONFIG_HASH) != wanted_hash:
        return "its config hash is not that of this FineTuneJob's spec"
    spec, live_spec = desired["spec"], live.get("spec") or {}
    found = difference(spec["template"], live_spec.get("template"), "spec.template")
    if found:
        return found
    for field in ("completions", "parallelism", "podFailurePolicy", "podReplacementPolicy"):
        found = difference(spec.get(field), live_spec.get(field), f"spec.{field}")
        if found:
            return found
    return None
