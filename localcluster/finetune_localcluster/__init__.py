"""A local Kubernetes cluster for tests and the demo: a real control plane (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler built from the Kubernetes Go
modules), a node agent standing in for kubelet + container runtime, and an S3 server.

Imports are lazy so that `podexec` (run for every container) and the CLI stay light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune_localcluster.controlplane import ControlPlane
    from finetune_localcluster.nodeagent import NodeAgent, NodeSpec
    from finetune_localcluster.s3server import S3Server

__all__ = ["ControlPlane", "NodeAgent", "NodeSpec", "S3Server"]

_EXPORTS = {
    "ControlPlane": "finetune_localcluster.controlplane",
    "NodeAgent": "finetune_localcluster.nodeagent",
    "NodeSpec": "finetune_localcluster.nodeagent",
    "S3Server": "finetune_localcluster.s3server",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
