"""Pytest fixtures for the local cluster (loaded by tests/conftest.py).

Session-scoped: `cluster` (control plane + node agent with gpu-node-0 and gpu-node-1,
2 `nvidia.com/gpu`, 16 CPUs and 64Gi each), `kubeconfig`, `kube`, `kubectl`, `pod_logs`,
`s3_server`. Function-scoped: `namespace` (fresh, PodSecurity "restricted" enforced,
deleted afterwards), `make_pvc`. Plain helper: `wait_for`.

Fixtures needing the Go-built binaries skip, naming what is missing and the command that
builds it, only when the binaries cannot be built. With FTO_REQUIRE_CLUSTER=1 (make test
sets it) that is an error instead: a wrong FTO_BIN_DIR must not pass as a green run of 0
e2e tests."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from finetune_localcluster.binaries import Binaries, BinariesUnavailable, find_binaries
from finetune_localcluster.cluster import LocalCluster, gpu_nodes
from finetune_localcluster.s3server import S3Server
from finetune_localcluster.waiting import wait_for as _wait_for

log = logging.getLogger(__name__)

# Set to 1 to make unavailable binaries fail the tests that need them instead of skipping.
REQUIRE_CLUSTER_ENV = "FTO_REQUIRE_CLUSTER"

RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class Kubectl(Protocol):
    def __call__(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]: ...


class PodLogs(Protocol):
    def __call__(
        self, namespace: str, pod_name: str, container: str | None = None, previous: bool = False
    ) -> str: ...


class MakePvc(Protocol):
    def __call__(self, namespace: str, name: str, size: str = "1Gi") -> Path: ...


@pytest.fixture(scope="session")
def localcluster_binaries() -> Binaries:
    """The Go-built binaries (built on first use; cached afterwards)."""
    try:
        return find_binaries()
    except BinariesUnavailable as error:
        if os.environ.get(REQUIRE_CLUSTER_ENV) == "1":
            pytest.fail(
                f"local control plane binaries unavailable, and {REQUIRE_CLUSTER_ENV}=1 "
                f"requires them: {error}",
                pytrace=False,
            )
        pytest.skip(f"local control plane binaries unavailable: {error}")


@pytest.fixture(scope="session")
def cluster(
    localcluster_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A real control plane plus the node agent with two GPU nodes, for the session.

    Its logs (each component's, each pod's) stay under pytest's temporary directory."""
    state_dir = tmp_path_factory.mktemp("localcluster")
    local = LocalCluster(
        state_dir, nodes=gpu_nodes(count=2, gpus_per_node=2), binaries=localcluster_binaries
    )
    local.start()
    log.info("local cluster up: KUBECONFIG=%s", local.kubeconfig)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> Path:
    """Path of the admin kubeconfig (client certificate in system:masters)."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Iterator[Any]:
    """An official `kubernetes.client.ApiClient` configured for the admin user."""
    client = cluster.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    """kubectl(argv, *, check=True, input=None, timeout=120) -> CompletedProcess[str],
    running the kubectl built for this cluster with the admin kubeconfig."""
    return cluster.kubectl


@pytest.fixture(scope="session")
def pod_logs(cluster: LocalCluster) -> PodLogs:
    """pod_logs(namespace, pod_name, container=None, previous=False) -> str."""
    return cluster.pod_logs


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing PodSecurity "restricted", deleted after the test."""
    name = cluster.create_namespace(_namespace_name(request.node.name), dict(RESTRICTED_LABELS))
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture
def make_pvc(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakePvc]:
    """make_pvc(namespace, name, size="1Gi") -> host directory of a static hostPath PV
    bound (by the real PV controller) to a new PVC `name`. The PVs are deleted afterwards."""
    created: list[tuple[str, str]] = []

    def make(namespace: str, name: str, size: str = "1Gi") -> Path:
        host_dir = tmp_path_factory.mktemp(f"pv-{name}")
        created.append((namespace, name))
        return cluster.make_pvc(namespace, name, host_dir, size)

    try:
        yield make
    finally:
        for namespace, name in created:
            cluster.delete_pv_of(namespace, name)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """wait_for(predicate, timeout=30, interval=0.2, message="condition") -> the truthy
    value the predicate returned; raises AssertionError naming `message` on timeout."""
    return _wait_for


@pytest.fixture(scope="session")
def s3_server(
    localcluster_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    """A versitygw S3 server on 127.0.0.1: `endpoint`, `access_key`, `secret_key`,
    `region`, `create_bucket(name) -> str`, `client()` (boto3), `env()`."""
    server = S3Server(tmp_path_factory.mktemp("s3"), binaries=localcluster_binaries)
    server.start()
    try:
        yield server
    finally:
        server.stop()
