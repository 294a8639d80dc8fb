"""FineTuneJobs, Jobs and pods shaped as the watches deliver them, for cache-level tests."""

from __future__ import annotations

from typing import Any

from finetune_operator.naming import LABEL_OWNER, LABEL_OWNER_UID, child_name


def finetunejob(name: str, namespace: str = "ml", phase: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"ftj-{name}",
            "resourceVersion": "10",
            "generation": 1,
        },
        "spec": {},
    }
    if phase:
        body["status"] = {"phase": phase}
    return body


def job_of(ftj: dict[str, Any]) -> dict[str, Any]:
    meta = ftj["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": child_name(meta["name"], meta["uid"]),
            "namespace": meta["namespace"],
            "uid": f"job-{meta['name']}",
            "resourceVersion": "11",
            "labels": {LABEL_OWNER: meta["name"], LABEL_OWNER_UID: meta["uid"]},
            "ownerReferences": [
                {"kind": "FineTuneJob", "uid": meta["uid"], "controller": True, "name": "x"}
            ],
            "managedFields": [{"manager": "x" * 1000}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "trainer"}]}}, "selector": {}},
        "status": {"active": 1},
    }


def pod_of(
    ftj: dict[str, Any],
    ip: str,
    *,
    job_uid: str | None = None,
    running: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    meta = ftj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"{meta['name']}-pod",
            "namespace": meta["namespace"],
            "uid": f"pod-{name or meta['name']}",
            "resourceVersion": "12",
            "labels": {LABEL_OWNER: meta["name"], LABEL_OWNER_UID: meta["uid"], "other": "x"},
            "ownerReferences": [
                {"kind": "Job", "uid": job_uid or f"job-{meta['name']}", "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "trainer", "env": [{"name": "A", "value": "b" * 500}]}]},
        "status": {
            "phase": "Running" if running else "Pending",
            "podIP": ip,
            "containerStatuses": [
                {"name": "trainer", "state": {"running": {}} if running else {"waiting": {}}}
            ],
        },
    }
