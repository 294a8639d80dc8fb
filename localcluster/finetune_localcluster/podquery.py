"""Small readers of pod and Job state for tests (plain dicts from KubeAPI)."""

from __future__ import annotations

from typing import Any

from finetune_localcluster.kubeapi import KubeAPI


def get_pod(api: KubeAPI, namespace: str, name: str) -> dict[str, Any]:
    return dict(api.get(f"/api/v1/namespaces/{namespace}/pods/{name}"))


def container_state(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """The `state` of a pod's container ({} until the node reports it)."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return dict(statuses[index]["state"]) if len(statuses) > index else {}


def waiting_reason(pod: dict[str, Any], index: int = 0) -> str | None:
    reason = container_state(pod, index).get("waiting", {}).get("reason")
    return str(reason) if reason is not None else None


def pod_condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = pod.get("status", {}).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == kind), None)


def job_pods(api: KubeAPI, namespace: str, job: str) -> list[dict[str, Any]]:
    return list(
        api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"job-name={job}")["items"]
    )


def job_condition(api: KubeAPI, namespace: str, job: str, kind: str) -> bool:
    """Whether the Job has condition `kind` (Complete, Failed, ...) with status True."""
    obj = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    return any(
        c["type"] == kind and c["status"] == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )
