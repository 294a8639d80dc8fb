"""Manifest builders for tests: pods and Jobs that pass the PodSecurity "restricted"
profile (which the test namespaces enforce)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Images are never pulled by the local node agent; this name only has to be valid.
DEFAULT_IMAGE = "localcluster.local/runner:latest"

RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def container(
    name: str,
    command: Sequence[str],
    *,
    image: str = DEFAULT_IMAGE,
    env: Sequence[Mapping[str, Any]] = (),
    volume_mounts: Sequence[Mapping[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A container that satisfies the restricted profile."""
    spec: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": list(command),
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
    }
    if env:
        spec["env"] = [dict(e) for e in env]
    if volume_mounts:
        spec["volumeMounts"] = [dict(m) for m in volume_mounts]
    spec.update(extra)
    return spec


def pod_spec(
    containers: Sequence[Mapping[str, Any]],
    *,
    restart_policy: str = "Never",
    volumes: Sequence[Mapping[str, Any]] = (),
    grace_seconds: int = 5,
    **extra: Any,
) -> dict[str, Any]:
    """A pod spec with the restricted pod-level securityContext."""
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": grace_seconds,
        "securityContext": dict(RESTRICTED_POD_SECURITY),
        "containers": [dict(c) for c in containers],
    }
    if volumes:
        spec["volumes"] = [dict(v) for v in volumes]
    spec.update(extra)
    return spec


def pod(name: str, namespace: str, spec: Mapping[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": dict(spec),
    }


def job(
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    *,
    backoff_limit: int = 0,
    **job_spec: Any,
) -> dict[str, Any]:
    """A batch/v1 Job running `spec` (a pod spec) once."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": dict(spec)}, **job_spec},
    }
