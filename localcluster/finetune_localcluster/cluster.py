"""The whole local cluster in one object: control plane + node agent (+ S3 server), as
used by the pytest fixtures, `python -m finetune_localcluster up` and `make cluster`."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune_localcluster.binaries import Binaries
from finetune_localcluster.controlplane import ControlPlane
from finetune_localcluster.kubeapi import ApiError, KubeAPI, api_client_for
from finetune_localcluster.nodeagent import NodeAgent, NodeSpec
from finetune_localcluster.s3server import S3Server
from finetune_localcluster.waiting import wait_for

log = logging.getLogger(__name__)


def gpu_nodes(count: int = 2, gpus_per_node: int = 2) -> list[NodeSpec]:
    """`count` GPU nodes named gpu-node-0.. with 16 CPUs, 64Gi and `gpus_per_node` GPUs."""
    return [NodeSpec(f"gpu-node-{i}", gpus=gpus_per_node) for i in range(count)]


class LocalCluster:
    """A running control plane with a node agent (and optionally an S3 server)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        nodes: Sequence[NodeSpec] | None = None,
        with_s3: bool = False,
        binaries: Binaries | None = None,
    ) -> None:
        self.control_plane = ControlPlane(state_dir, binaries=binaries)
        self._node_specs = list(nodes if nodes is not None else gpu_nodes())
        self._with_s3 = with_s3
        self._binaries = binaries
        self.agent: NodeAgent | None = None
        self.s3: S3Server | None = None
        self.api: KubeAPI | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def state_dir(self) -> Path:
        return self.control_plane.state_dir

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and wait until every node is Ready."""
        try:
            self.control_plane.start()
            pki = self.control_plane.pki
            assert pki is not None
            self.api = KubeAPI(
                self.server, pki.ca.cert, pki.admin.cert, pki.admin.key, user_agent="localcluster"
            )
            self.agent = NodeAgent(self.control_plane, self._node_specs)
            self.agent.start()
            wait_for(self._nodes_ready, timeout=60, message="every node to be Ready")
            if self._with_s3:
                self.s3 = S3Server(self.state_dir / "s3", binaries=self._binaries)
                self.s3.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the S3 server, the node agent (killing pods) and the control plane."""
        if self.s3 is not None:
            self.s3.stop()
        if self.agent is not None:
            self.agent.stop()
        if self.api is not None:
            self.api.close()
        self.control_plane.stop()

    def _nodes_ready(self) -> bool:
        assert self.api is not None
        nodes = self.api.get("/api/v1/nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return ready >= {spec.name for spec in self._node_specs}

    # --- conveniences ---------------------------------------------------------------------
    def api_client(self) -> Any:
        """A new official `kubernetes.client.ApiClient` for the admin user."""
        pki = self.control_plane.pki
        assert pki is not None
        return api_client_for(self.server, pki.ca.cert, pki.admin.cert, pki.admin.key)

    def kubectl(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built for this cluster as admin (argv list, never a shell)."""
        return self.control_plane.kubectl(args, check=check, input=input, timeout=timeout)

    def pod_logs(
        self, namespace: str, pod_name: str, container: str | None = None, previous: bool = False
    ) -> str:
        """A pod container's stdout+stderr as the node agent captured it."""
        assert self.agent is not None
        return self.agent.pod_logs(namespace, pod_name, container, previous)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create a namespace and wait for its default ServiceAccount (pods need it)."""
        assert self.api is not None
        self.api.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}},
            },
        )
        wait_for(
            lambda: self.api.get_or_none(  # type: ignore[union-attr]
                f"/api/v1/namespaces/{name}/serviceaccounts/default"
            ),
            timeout=30,
            interval=0.1,
            message=f"the default ServiceAccount of namespace {name}",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace (the namespace controller finishes in the background)."""
        assert self.api is not None
        try:
            self.api.delete(f"/api/v1/namespaces/{name}")
        except ApiError as error:
            if error.status != 404:
                raise

    def make_pvc(
        self, namespace: str, name: str, host_dir: Path, size: str = "1Gi", timeout: float = 60
    ) -> Path:
        """A static hostPath PersistentVolume at `host_dir` and a claim `name` for it,
        bound by the real PV controller; returns host_dir once the claim is Bound."""
        assert self.api is not None
        host_dir.mkdir(parents=True, exist_ok=True)
        host_dir.chmod(0o777)  # pods may run as any user on a real node
        pv_name = f"pv-{namespace}-{name}"[:253]
        self.api.create(
            "/api/v1/persistentvolumes",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "labels": {"localcluster/claim": name[:63]}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(host_dir), "type": "Directory"},
                    # Reserved for this claim, so the binder cannot pick another PV.
                    "claimRef": {"namespace": namespace, "name": name},
                },
            },
        )
        self.api.create(
            f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "resources": {"requests": {"storage": size}},
                },
            },
        )
        started = time.monotonic()
        wait_for(
            lambda: (
                self.api.get(  # type: ignore[union-attr]
                    f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
                )["status"].get("phase")
                == "Bound"
            ),
            timeout=timeout,
            message=f"PVC {namespace}/{name} to be bound to {pv_name}",
        )
        log.info("PVC %s/%s bound in %.1fs", namespace, name, time.monotonic() - started)
        return host_dir

    def delete_pv_of(self, namespace: str, name: str) -> None:
        assert self.api is not None
        try:
            self.api.delete(f"/api/v1/persistentvolumes/{f'pv-{namespace}-{name}'[:253]}")
        except ApiError as error:
            if error.status != 404:
                raise
