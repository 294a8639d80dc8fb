"""Whether an existing Job may be taken as a FineTuneJob's child. Pure.

Child names are predictable (``<name>-<hash of uid>``), so anyone who may create Jobs in a
namespace could create the child first, with their own training config (output to their
bucket, the victim's credentials sent to their endpoint), while the operator is paused,
restarting or busy. So a Job is adopted only when its controller is the FineTuneJob and its
spec is exactly what the operator would have made: its pod template (what it runs, with
which config, volumes, account and Secrets, on which scheduler) and the Job fields around
it (which pods it selects, which controller runs it). The fields that follow
``spec.lifecycle`` are left out: the reconciler sets those on the Job it takes.

Beyond what the operator sets, a live Job may hold only what the API server itself writes
into a Job when it stores one (:data:`SERVER_DEFAULTS`), at the place it writes it and with
the value it writes there. (The trainer's config rides in the pod template, so there is no
second child, such as a ConfigMap, to plant.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .naming import ANNOTATION_CONFIG_HASH

Obj = dict[str, Any]
# Where a value sits in a Job: its field names, with LIST_ENTRY for "any entry of a list".
Where = tuple[str | None, ...]
LIST_ENTRY = None


def _where(path: str) -> Where:
    """``"spec.template.spec.containers[].ports[].protocol"`` as a :data:`Where`."""
    return tuple(LIST_ENTRY if part == "[]" else part for part in re.findall(r"\[\]|[^.[]+", path))


# What the API server writes into a Job the operator created, in fields the operator may
# leave out, and the values it writes there (the defaulting of batch/v1 Job and core/v1
# PodSpec, as a v1.36 server stores the Job the operator builds; older servers also write
# the template's creationTimestamp as null). Where the operator sets a field itself, its
# value is compared and the default plays no part. restartPolicy is not here: its default,
# Always, is not allowed in a Job, so the API server never stores it in one.
SERVER_DEFAULTS: dict[Where, tuple[object, ...]] = {
    _where(path): values
    for path, values in {
        "spec.completionMode": ("NonIndexed",),
        "spec.manualSelector": (False,),
        # spec.selector is generated from the Job's own uid: see generated_selector.
        "spec.podFailurePolicy.rules[].onPodConditions[].status": ("True",),
        "spec.template.metadata.creationTimestamp": (None,),
        "spec.template.spec.dnsPolicy": ("ClusterFirst",),
        "spec.template.spec.schedulerName": ("default-scheduler",),
        "spec.template.spec.securityContext": ({},),
        "spec.template.spec.terminationGracePeriodSeconds": (30,),
        "spec.template.spec.enableServiceLinks": (True,),
        "spec.template.spec.containers[].imagePullPolicy": ("Always", "IfNotPresent"),
        "spec.template.spec.containers[].terminationMessagePath": ("/dev/termination-log",),
        "spec.template.spec.containers[].terminationMessagePolicy": ("File",),
        "spec.template.spec.containers[].ports[].protocol": ("TCP",),
        "spec.template.spec.containers[].env[].valueFrom.fieldRef.apiVersion": ("v1",),
        "spec.template.spec.volumes[].configMap.defaultMode": (0o644,),
        "spec.template.spec.volumes[].downwardAPI.defaultMode": (0o644,),
        "spec.template.spec.volumes[].downwardAPI.items[].fieldRef.apiVersion": ("v1",),
    }.items()
}
# The label the API server's generated selector matches: the Job's own uid.
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
_SELECTOR = _where("spec.selector")

# Fields the API server leaves out when they are false (a plain bool with omitempty, where
# absent means false); the operator writes false there.
_OMITTED_WHEN_FALSE = frozenset(
    _where(path)
    for path in (
        "spec.template.spec.containers[].volumeMounts[].readOnly",
        "spec.template.spec.volumes[].persistentVolumeClaim.readOnly",
    )
)
# Maps others add entries to (the API server its job-name and controller-uid labels, Kueue
# and mutating webhooks their own): the operator's entries are compared, others allowed.
_OPEN_MAPS = frozenset(
    _where(path) for path in ("spec.template.metadata.labels", "spec.template.metadata.annotations")
)
# Resource quantities, compared by amount: "0.5" is stored as "500m", "1Gi" may be written
# "1073741824". Elsewhere a string is compared as a string.
_QUANTITY_MAPS = frozenset(
    _where(path)
    for path in (
        "spec.template.spec.containers[].resources.limits",
        "spec.template.spec.containers[].resources.requests",
    )
)
_QUANTITIES = frozenset({_where("spec.template.spec.volumes[].emptyDir.sizeLimit")})

# The Job fields that follow spec.lifecycle (builders.job.lifecycle_patch): the reconciler
# sets them on the Job it takes, so what a live Job holds there is no reason to refuse it.
FOLLOWS_LIFECYCLE = frozenset(
    {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "suspend"}
)


def generated_selector(job_uid: str) -> Obj:
    """The selector the API server gives a Job that does not choose its own."""
    return {"matchLabels": {CONTROLLER_UID_LABEL: job_uid}}


def _identical(a: Any, b: Any) -> bool:
    """Equal, with JSON's types: ``True`` is not ``1``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _amount(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        amount = parse_quantity(value)
    except (ValueError, ArithmeticError):
        return None
    return amount if amount.is_finite() else None


def _same_quantity(desired: Any, live: Any) -> bool:
    if _identical(desired, live):
        return True
    want, have = _amount(desired), _amount(live)
    return want is not None and have is not None and want == have


def _is_quantity(where: Where) -> bool:
    return where in _QUANTITIES or where[:-1] in _QUANTITY_MAPS


def _may_be_absent(value: Any, where: Where) -> bool:
    """Whether the API server stores ``value``, written by the operator, as nothing."""
    if isinstance(value, list):
        return not value  # Go cannot tell an empty list from none
    return value is False and where in _OMITTED_WHEN_FALSE


def difference(
    desired: Any,
    live: Any,
    path: str = "",
    *,
    where: Where = (),
    defaults: Mapping[Where, tuple[object, ...]] = SERVER_DEFAULTS,
) -> str | None:
    """The first place where ``live`` is not what ``desired`` describes, or None.
    ``path`` names the place in messages; ``where`` is the same place, as
    :data:`SERVER_DEFAULTS` and the other tables here spell it."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return f"{path} differs"
        desired = {key: value for key, value in desired.items() if value is not None}
        for key, value in desired.items():
            here, named = (*where, key), f"{path}.{key}"
            if key not in live:
                if _may_be_absent(value, here):
                    continue
                return f"{named} is missing"
            found = difference(value, live[key], named, where=here, defaults=defaults)
            if found:
                return found
        if where in _OPEN_MAPS:
            return None
        for key in sorted(set(live) - set(desired)):
            here, named = (*where, key), f"{path}.{key}"
            allowed = defaults.get(here)
            if allowed is None:
                return f"{named} is not one the operator sets"
            if not any(_identical(value, live[key]) for value in allowed):
                return f"{named} is not what the API server sets there"
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return f"{path} has other entries"
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found = difference(
                want, have, f"{path}[{index}]", where=(*where, LIST_ENTRY), defaults=defaults
            )
            if found:
                return found
        return None
    same = _same_quantity(desired, live) if _is_quantity(where) else _identical(desired, live)
    return None if same else f"{path} differs"


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
    spec = {k: v for k, v in desired["spec"].items() if k not in FOLLOWS_LIFECYCLE}
    live_spec = {k: v for k, v in (live.get("spec") or {}).items() if k not in FOLLOWS_LIFECYCLE}
    defaults = dict(SERVER_DEFAULTS)
    job_uid = live["metadata"].get("uid")
    if job_uid:
        # Any other selector (or manualSelector: true) could match pods of other Jobs.
        defaults[_SELECTOR] = (generated_selector(job_uid),)
    return difference(spec, live_spec, "spec", where=("spec",), defaults=defaults)
