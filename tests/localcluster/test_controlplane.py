"""The control plane itself: version, admission, and isolation between instances."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finetune_localcluster import manifests
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.controlplane import ControlPlane
from finetune_localcluster.kubeapi import KubeAPI

pytestmark = pytest.mark.e2e


def test_apiserver_reports_the_built_version(cluster: LocalCluster, kubectl: Any) -> None:
    assert cluster.control_plane.get("/version")["gitVersion"] == "v1.36.3"
    versions = json.loads(kubectl(["version", "-o", "json"]).stdout)
    assert versions["clientVersion"]["gitVersion"] == "v1.36.3"
    assert versions["serverVersion"]["gitVersion"] == "v1.36.3"


def test_components_listen_on_loopback_only(cluster: LocalCluster) -> None:
    ports = cluster.control_plane.ports
    assert ports is not None
    assert cluster.server == f"https://127.0.0.1:{ports.apiserver}"
    for name, process in cluster.control_plane.processes.items():
        assert process.running(), f"{name} is not running"
        binds = [arg for arg in process.argv if "address" in arg or "listen" in arg]
        assert all("0.0.0.0" not in arg for arg in binds), binds


def test_nodes_are_ready_gpu_nodes(api: KubeAPI) -> None:
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
    assert {"gpu-node-0", "gpu-node-1"} <= set(nodes)
    node = nodes["gpu-node-0"]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert "kubelet" in node["metadata"]["annotations"]["finetune.dev/node-agent-description"]
    lease = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/gpu-node-0")
    assert lease["spec"]["holderIdentity"] == "gpu-node-0"


def test_restricted_namespace_rejects_a_privileged_pod(namespace: str, kubectl: Any) -> None:
    spec = manifests.pod_spec([manifests.container("main", ["true"])])
    spec["containers"][0]["securityContext"] = {"privileged": True}
    pod = manifests.pod("privileged", namespace, spec)
    result = kubectl(["apply", "-f", "-"], input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr


def test_rbac_denies_an_unprivileged_service_account(namespace: str, kubectl: Any) -> None:
    result = kubectl(
        [
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            namespace,
            f"--as=system:serviceaccount:{namespace}:default",
        ],
        check=False,
    )
    assert result.stdout.strip() == "no"


def test_two_control_planes_run_at_once(cluster: LocalCluster) -> None:
    with ControlPlane(binaries=cluster.control_plane.binaries) as second:
        assert second.ports is not None and cluster.control_plane.ports is not None
        assert second.ports.apiserver != cluster.control_plane.ports.apiserver
        assert second.get("/version")["gitVersion"] == "v1.36.3"
        second.kubectl(["create", "namespace", "only-in-second"])
        assert "only-in-second" in second.kubectl(["get", "ns"]).stdout
        assert "only-in-second" not in cluster.kubectl(["get", "ns"]).stdout
        processes = list(second.processes.values())
    assert len(processes) == 4
    assert not any(p.running() for p in processes)
    assert cluster.control_plane.get("/version")["gitVersion"] == "v1.36.3"


def test_python_clients_work_with_the_fixtures(kube: Any, kubeconfig: Any) -> None:
    from kubernetes import client, config

    names = {n.metadata.name for n in client.CoreV1Api(kube).list_node().items}
    assert {"gpu-node-0", "gpu-node-1"} <= names
    from_file = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        namespaces = client.CoreV1Api(from_file).list_namespace().items
        assert "kube-system" in {ns.metadata.name for ns in namespaces}
    finally:
        from_file.close()
