"""Runs that cannot start hold no GPU: a FineTuneJob naming a ConfigMap or claim that does
not exist gets no Job until it does, and a trainer pod that waits on a missing Secret is
removed after spec.lifecycle.startupDeadlineSeconds, so the FineTuneJobs queued behind it
on the node start."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finetune_localcluster.waiting import wait_for

from .ftj import FineTuneJobs

pytestmark = pytest.mark.e2e

GPU = "nvidia.com/gpu"
# An S3 output needs no volume: the pod is judged on its other parts alone.
S3_OUTPUT = {"output": {"s3": {"uri": "s3://outputs/startup"}}}
MISSING_SECRET_OUTPUT = {
    "output": {"s3": {"uri": "s3://outputs/startup", "credentialsSecretRef": {"name": "typo"}}}
}


def _gpus_in_use(ftjs: FineTuneJobs) -> dict[str, int]:
    """GPUs held per node by pods that still hold them (bound, not finished)."""
    pods = json.loads(ftjs.cluster.kubectl(["get", "pods", "-A", "-o", "json"]).stdout)["items"]
    used: dict[str, int] = {}
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"].get("containers") or []:
            wanted = int(((container.get("resources") or {}).get("limits") or {}).get(GPU, 0))
            used[node] = used.get(node, 0) + wanted
    return used


def _free_two_gpu_node(ftjs: FineTuneJobs) -> str:
    """A 2-GPU node none of whose GPUs are held (pods of earlier tests may still be going)."""
    nodes = json.loads(ftjs.cluster.kubectl(["get", "nodes", "-o", "json"]).stdout)["items"]
    two_gpu = [
        n["metadata"]["name"] for n in nodes if n["status"].get("allocatable", {}).get(GPU) == "2"
    ]
    assert two_gpu, "the session cluster has no node with 2 GPUs"

    def free() -> str | None:
        used = _gpus_in_use(ftjs)
        return next((n for n in two_gpu if used.get(n, 0) == 0), None)

    node: str = wait_for(free, timeout=120, interval=1, message="a node with both GPUs free")
    return node


def _on(node: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **spec,
        "resources": {"gpus": 1},
        "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}},
    }


def test_a_missing_config_map_or_claim_holds_the_job_back_until_it_exists(
    ftjs: FineTuneJobs,
) -> None:
    # Suspended: once its Job exists, nothing of it needs a GPU.
    dataset = {"configMap": {"name": "chats", "key": "train.jsonl"}}
    spec = {"dataset": dataset, "lifecycle": {"suspend": True}, **S3_OUTPUT}
    ftjs.apply("nocm", spec)
    status = ftjs.wait_status(
        "nocm", lambda s: s.get("reason") == "DatasetConfigMapMissing", what="missing ConfigMap"
    )
    assert status["phase"] == "Pending", status
    assert status["message"].startswith(
        f"spec.dataset.configMap.name: ConfigMap chats does not exist in namespace "
        f"{ftjs.namespace}; create it"
    ), status
    assert ftjs.jobs("nocm") == []
    ftjs.kubectl("create", "configmap", "chats", "--from-literal=train.jsonl={}")
    ftjs.wait_phase("nocm", "Suspended", timeout=90)
    assert len(ftjs.jobs("nocm")) == 1

    claim = {"pvc": {"claimName": "checkpoints"}}
    ftjs.apply("nopvc", {"lifecycle": {"suspend": True}, "output": claim})
    status = ftjs.wait_status(
        "nopvc", lambda s: s.get("reason") == "ReferenceNotFound", what="missing claim"
    )
    assert status["message"].startswith(
        "spec.output.pvc.claimName: PersistentVolumeClaim checkpoints does not exist"
    ), status
    assert ftjs.jobs("nopvc") == []


def test_pods_stuck_on_a_missing_secret_free_their_gpus_for_the_next_run(
    ftjs: FineTuneJobs,
) -> None:
    node = _free_two_gpu_node(ftjs)
    broken = _on(node, {**MISSING_SECRET_OUTPUT, "lifecycle": {"startupDeadlineSeconds": 20}})
    ftjs.apply("typo-a", broken)
    ftjs.apply("typo-b", broken)
    for name in ("typo-a", "typo-b"):
        ftjs.wait_status(
            name,
            lambda s: s.get("reason") == "CreateContainerConfigError",
            what=f"{name} to hold a GPU and wait on the Secret",
        )
    ftjs.apply("queued", _on(node, {"model": {"name": "org/model"}, **S3_OUTPUT}))
    ftjs.wait_status(
        "queued", lambda s: s.get("reason") == "Unschedulable", what="the third to wait for a GPU"
    )

    for name in ("typo-a", "typo-b"):
        status = ftjs.wait_phase(name, "Failed", timeout=90)
        assert status["reason"] == "StartupFailed", status
        assert status["message"].startswith(
            f"spec.output.s3.credentialsSecretRef.name: Secret typo does not exist in "
            f"namespace {ftjs.namespace}; create it"
        ), status
        assert "spec.lifecycle.startupDeadlineSeconds (20s)" in status["message"], status
        assert 'secret "typo" not found' in status["message"], status
        uid = ftjs.get(name)["metadata"]["uid"]
        wait_for(
            lambda uid=uid: not ftjs.jobs_by_uid(uid) and not ftjs.pods(uid),
            timeout=60,
            message=f"the Job and pod of {name} to be gone",
        )

    queued_uid = ftjs.get("queued")["metadata"]["uid"]

    def bound() -> dict[str, Any] | None:
        pods = ftjs.pods(queued_uid)
        return next((p for p in pods if p["spec"].get("nodeName") == node), None)

    wait_for(bound, timeout=90, interval=1, message="the queued run's pod to be scheduled")

    def started() -> bool:
        phases = {(p.get("status") or {}).get("phase") for p in ftjs.pods(queued_uid)}
        return bool(phases & {"Running", "Succeeded", "Failed"})

    wait_for(started, timeout=90, interval=1, message="the queued run's trainer to start")
    # The outcome stays: removing the Job was the operator's own doing.
    for name in ("typo-a", "typo-b"):
        assert ftjs.status(name)["reason"] == "StartupFailed"
    reasons = ftjs.reasons("typo-a", "StartupFailed")
    assert reasons["StartupFailed"] == 1, reasons
