"""The local NODE AGENT: test infrastructure standing in for kubelet + a container runtime.

There is no kubelet, container runtime or image registry on this machine, so this agent
plays their part against the real control plane, with each node's own credentials
(CN=system:node:<name>, O=system:nodes), so the Node authorizer and NodeRestriction confine
it exactly as they confine a kubelet. It:

- registers Nodes with cpu, memory, pods and `nvidia.com/gpu` capacity and GPU labels, and
  keeps them Ready (Lease renewals in kube-node-lease, periodic status updates);
- watches the pods the real scheduler binds to its nodes, and runs each container's
  `command` + `args` as a local process (see podrunner.py, container.py, podexec.py):
  env from values, Secrets, ConfigMaps and the downward API; configMap, secret,
  downwardAPI, projected (service-account token), emptyDir, hostPath and
  persistentVolumeClaim (hostPath or local PV) volumes bind-mounted at their mountPaths
  in a private mount namespace; a per-pod loopback address 127.0.0.x as the pod IP;
- reports Pending/Running/Succeeded/Failed with container states, exit codes and
  termination messages, restarts for OnFailure/Always, and on deletion sends SIGTERM,
  waits the grace period, sends SIGKILL, reports, and deletes the pod with grace 0;
- serves container logs on a kubelet-style HTTPS endpoint, so `kubectl logs` works.

Limits, by design: images are not pulled (commands run in the project's environment; an
image on a `.invalid` registry simulates a pull failure); resource limits are not enforced
(no cgroups); securityContext (runAsUser, capabilities, ...) is not applied: processes run
as the agent's user; probes and lifecycle hooks are not run (a running container is
Ready); pods share the host's network namespace (each binds its own 127.0.0.x); volumes
are written once at pod start."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_localcluster import podstatus
from finetune_localcluster.container import ContainerRun
from finetune_localcluster.controlplane import ControlPlane
from finetune_localcluster.images import LocalImages
from finetune_localcluster.ippool import LoopbackAddressPool
from finetune_localcluster.kubeapi import ApiError, KubeAPI, WatchStream
from finetune_localcluster.kubeletserver import KubeletServer
from finetune_localcluster.podrunner import PodWorker
from finetune_localcluster.processes import register_stop_hook, unregister_stop_hook

log = logging.getLogger(__name__)

AGENT_LABEL = "finetune.dev/node-agent"
AGENT_ANNOTATION = "finetune.dev/node-agent-description"
AGENT_DESCRIPTION = (
    "test infrastructure standing in for kubelet + container runtime: runs pod commands as "
    "local processes; images are not pulled, resource limits and securityContext are not "
    "enforced"
)
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_REPORT_SECONDS = 60.0
WATCH_TIMEOUT_SECONDS = 300
KUBELET_VERSION = "v1.36.3"
MEMORY_ROOT = Path("/dev/shm")
MEMORY_PREFIX = "localcluster-"


@dataclass(frozen=True)
class NodeSpec:
    """A node to register: its name, capacity and extra labels."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    gpus: int = 0
    gpu_product: str = "NVIDIA-H200"
    labels: Mapping[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": "100Gi",
        }
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        return capacity

    def all_labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else "arm64",
            AGENT_LABEL: "true",
        }
        if self.gpus:
            # The labels NVIDIA's GPU feature discovery puts on GPU nodes.
            labels.update(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.count": str(self.gpus),
                    "nvidia.com/gpu.product": self.gpu_product,
                }
            )
        labels.update(self.labels)
        return labels


@dataclass
class _Node:
    spec: NodeSpec
    api: KubeAPI
    uid: str = ""
    watch: WatchStream | None = None


class NodeAgent:
    """Registers `nodes` with the control plane and runs the pods bound to them.

    Use as a context manager or call start()/stop(). `pod_logs()` reads a container's log."""

    def __init__(
        self,
        control_plane: ControlPlane,
        nodes: Sequence[NodeSpec],
        *,
        state_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        assert control_plane.pki is not None, "start the control plane first"
        self.control_plane = control_plane
        self.state_dir = (state_dir or control_plane.state_dir / "node-agent").resolve()
        self.pods_dir = self.state_dir / "pods"
        # Secrets, tokens and Memory emptyDirs live on tmpfs, as kubelet keeps them.
        self.memory_dir = MEMORY_ROOT / f"{MEMORY_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.addresses = LoopbackAddressPool()
        self.extra_env = dict(extra_env or {})
        self.images = LocalImages()
        self._nodes: dict[str, _Node] = {}
        self._specs = list(nodes)
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()  # uids of pods that ran here and are terminal
        self._force_deleted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kubelet_server: KubeletServer | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Register the nodes, then start heartbeats and pod watches."""
        pki = self.control_plane.pki
        assert pki is not None
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_memory_dirs()
        self.memory_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        register_stop_hook(self.stop)
        self._kubelet_server = KubeletServer(self, pki.kubelet_serving, pki.ca.cert)
        self._kubelet_server.start()
        for spec in self._specs:
            pair = pki.node_client(spec.name)
            api = KubeAPI(
                self.control_plane.server,
                pki.ca.cert,
                pair.cert,
                pair.key,
                user_agent=f"localcluster-node-agent/{spec.name}",
            )
            node = _Node(spec, api)
            self._nodes[spec.name] = node
            self._register(node)
        self._spawn("node-heartbeat", self._heartbeat_loop)
        for node in self._nodes.values():
            self._spawn(f"watch-{node.spec.name}", self._watch_loop, node)
        log.info("node agent running nodes %s", ", ".join(self._nodes))

    def stop(self) -> None:
        """Kill every pod's processes and stop all threads (no API calls needed)."""
        if self._stop.is_set():
            return
        self._stop.set()
        unregister_stop_hook(self.stop)
        for node in self._nodes.values():
            if node.watch is not None:
                node.watch.close()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(timeout=15)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._kubelet_server is not None:
            self._kubelet_server.stop()
        self.addresses.release_all()
        shutil.rmtree(self.memory_dir, ignore_errors=True)
        log.info("node agent stopped")

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- services for pod workers ---------------------------------------------------------
    def allocatable(self, node_name: str) -> dict[str, str]:
        return self._nodes[node_name].spec.capacity()

    def base_env(self, hostname: str, image: str = "") -> dict[str, str]:
        """What every container gets before its own env: the project's PATH (images are
        not pulled; a local image's executables come first), HOSTNAME, and the
        `kubernetes` Service variables pointing at the apiserver on loopback (the
        Service's ClusterIP is not routed here)."""
        port = str(self.control_plane.ports.apiserver) if self.control_plane.ports else ""
        bin_dir = str(Path(sys.executable).parent)
        image_bin = self.images.bin_dir(image)
        if image_bin:
            bin_dir = f"{image_bin}:{bin_dir}"
        env = {
            "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "HOSTNAME": hostname,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": port,
            "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
        }
        env.update(self.extra_env)
        return env

    def record_event(
        self,
        worker: PodWorker,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        container: ContainerRun | None = None,
    ) -> None:
        """Post a core/v1 Event about the pod, as kubelet does (best effort)."""
        timestamp = podstatus.now()
        involved: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": worker.namespace,
            "name": worker.pod_name,
            "uid": worker.uid,
        }
        if container is not None:
            kind = "initContainers" if container.init else "containers"
            involved["fieldPath"] = f"spec.{kind}{{{container.name}}}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{worker.pod_name}.{uuid.uuid4().hex[:16]}",
                "namespace": worker.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": worker.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": worker.node_name,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        log.info("pod %s/%s: %s %s", worker.namespace, worker.pod_name, reason, message)
        try:
            worker.api.create(f"/api/v1/namespaces/{worker.namespace}/events", event)
        except ApiError as error:
            log.debug("event not recorded: %s", error.reason)

    def worker_finished(self, worker: PodWorker) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
            self._finished.add(worker.uid)

    # --- logs -----------------------------------------------------------------------------
    def pod_log_path(
        self, namespace: str, pod_name: str, container: str | None = None, previous: bool = False
    ) -> Path | None:
        """The log file of a pod's container (the pod's first container by default; the
        run before the last restart with previous=True), or None if it never ran here."""
        candidates = sorted(
            self.pods_dir.glob(f"{namespace}_{pod_name}_*"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            return None
        containers_dir = candidates[-1] / "containers"
        if container is None:
            names = _container_order(candidates[-1])
            if not names:
                return None
            container = names[0]
        logs = sorted((containers_dir / container).glob("*.log"), key=lambda p: int(p.stem))
        if previous:
            return logs[-2] if len(logs) >= 2 else None
        return logs[-1] if logs else None

    def _workers_of(self, namespace: str, pod_name: str) -> list[PodWorker]:
        with self._lock:
            return [
                w
                for w in self._workers.values()
                if (w.namespace, w.pod_name) == (namespace, pod_name)
            ]

    def pod_active(self, namespace: str, pod_name: str) -> bool:
        """Whether a pod of that name is being run by this agent right now."""
        return bool(self._workers_of(namespace, pod_name))

    def kill_containers(self, namespace: str, pod_name: str) -> int:
        """SIGKILL the process group of every running container of a pod, as the kernel's
        OOM killer or a crash would: no SIGTERM first, unlike any deletion (kubelet gives
        even a forced one a short grace period). The pod then fails like a crashed one.
        Returns how many containers were killed. For tests of hard failures."""
        killed = 0
        for worker in self._workers_of(namespace, pod_name):
            for container in worker.init_containers + worker.containers:
                if container.running():
                    container.signal_kill()
                    killed += 1
        log.info("pod %s/%s: SIGKILLed %d container(s)", namespace, pod_name, killed)
        return killed

    def signal_containers(self, namespace: str, pod_name: str, signum: int) -> int:
        """Send ``signum`` to the process group of every running container of a pod:
        SIGSTOP freezes a trainer as a hang would (its metrics endpoint stops answering
        too), SIGCONT thaws it. Returns how many containers got it. For tests of stalls."""
        sent = 0
        for worker in self._workers_of(namespace, pod_name):
            for container in worker.init_containers + worker.containers:
                if container.running():
                    container.send_signal(signum)
                    sent += 1
        log.info("pod %s/%s: signal %d to %d container(s)", namespace, pod_name, signum, sent)
        return sent

    def pod_logs(
        self, namespace: str, pod_name: str, container: str | None = None, previous: bool = False
    ) -> str:
        """The stdout+stderr of a pod's container ("" if it has not run on these nodes)."""
        path = self.pod_log_path(namespace, pod_name, container, previous)
        return path.read_text(errors="replace") if path else ""

    # --- nodes ----------------------------------------------------------------------------
    def _node_status(self, node: _Node) -> dict[str, Any]:
        timestamp = podstatus.now()

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": timestamp,
                "lastTransitionTime": timestamp,
            }

        uname = os.uname()
        port = self._kubelet_server.port if self._kubelet_server else 0
        return {
            "capacity": node.spec.capacity(),
            "allocatable": node.spec.capacity(),
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "node agent has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "node agent has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "node agent has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "local node agent (test stand-in for kubelet) is posting ready status",
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, node.spec.name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node.spec.name)),
                "bootID": uuid.uuid4().hex,
                "kernelVersion": uname.release,
                "osImage": "localcluster node agent (test infrastructure)",
                "containerRuntimeVersion": "localcluster://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": node.spec.all_labels()["kubernetes.io/arch"],
            },
        }

    def _register(self, node: _Node) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.spec.name,
                "labels": node.spec.all_labels(),
                "annotations": {AGENT_ANNOTATION: AGENT_DESCRIPTION},
            },
            "spec": {},
            "status": self._node_status(node),
        }
        try:
            created = node.api.create("/api/v1/nodes", body)
        except ApiError as error:
            if error.status != 409:
                raise
            created = node.api.patch(
                f"/api/v1/nodes/{node.spec.name}", {"metadata": body["metadata"]}
            )
        node.uid = created["metadata"]["uid"]
        # Status on create is kept for nodes, but an existing Node needs it written.
        node.api.patch(
            f"/api/v1/nodes/{node.spec.name}/status",
            {"status": self._node_status(node)},
            strategic=True,
        )
        self._renew_lease(node)
        log.info("registered node %s (%s)", node.spec.name, node.spec.capacity())

    def _renew_lease(self, node: _Node) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.spec.name}"
        renew = podstatus.now().replace("Z", ".000000Z")
        try:
            node.api.patch(path, {"spec": {"renewTime": renew, "holderIdentity": node.spec.name}})
        except ApiError as error:
            if error.status != 404:
                raise
            node.api.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": node.spec.name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": node.spec.name,
                                "uid": node.uid,
                            }
                        ],
                    },
                    "spec": {
                        "holderIdentity": node.spec.name,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": renew,
                    },
                },
            )

    def _heartbeat_loop(self) -> None:
        since_status = 0.0
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            since_status += LEASE_RENEW_SECONDS
            for node in self._nodes.values():
                try:
                    self._renew_lease(node)
                    if since_status >= STATUS_REPORT_SECONDS:
                        node.api.patch(
                            f"/api/v1/nodes/{node.spec.name}/status",
                            {"status": self._node_status(node)},
                            strategic=True,
                        )
                except Exception as error:
                    log.warning("heartbeat of node %s failed: %s", node.spec.name, error)
            if since_status >= STATUS_REPORT_SECONDS:
                since_status = 0.0

    # --- pods -----------------------------------------------------------------------------
    def _watch_loop(self, node: _Node) -> None:
        """List then watch the pods bound to this node (the only pods the Node authorizer
        lets it see), re-listing after 410 Gone or any error."""
        selector = f"spec.nodeName={node.spec.name}"
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    listing = node.api.get("/api/v1/pods", fieldSelector=selector)
                    resource_version = listing["metadata"]["resourceVersion"]
                    self._sync(node, listing["items"])
                node.watch = node.api.watch(
                    "/api/v1/pods",
                    resource_version=resource_version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    fieldSelector=selector,
                )
                for event in node.watch:
                    if self._stop.is_set():
                        break
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        log.info("watch on %s ended: %s", node.spec.name, obj.get("message"))
                        resource_version = None  # 410 Gone: the version is too old
                        break
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._dispatch(node, kind, obj)
            except Exception as error:
                if self._stop.is_set():
                    break
                log.warning("pod watch on %s failed (%s); re-listing", node.spec.name, error)
                resource_version = None
                self._stop.wait(1.0)

    def _sync(self, node: _Node, pods: list[dict[str, Any]]) -> None:
        present = set()
        for pod in pods:
            present.add(pod["metadata"]["uid"])
            self._dispatch(node, "ADDED", pod)
        with self._lock:
            vanished = [
                w
                for uid, w in self._workers.items()
                if uid not in present and w.node_name == node.spec.name
            ]
        for worker in vanished:
            worker.gone()

    def _dispatch(self, node: _Node, kind: str | None, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if kind == "DELETED":
                self._finished.discard(uid)
                self._force_deleted.discard(uid)
                if worker is not None:
                    worker.gone()
                return
            if worker is not None:
                worker.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if uid in self._finished or phase in ("Succeeded", "Failed"):
                # Terminal: kubelet completes a deletion of such a pod with grace 0.
                self._finished.add(uid)
                deleting = pod["metadata"].get("deletionTimestamp")
                if not deleting or uid in self._force_deleted:
                    return
                self._force_deleted.add(uid)
            else:
                worker = PodWorker(self, node.spec.name, node.api, pod)
                self._workers[uid] = worker
        if worker is not None:
            worker.start()
            return
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            node.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": uid},
                },
            )


def _remove_stale_memory_dirs() -> None:
    """Remove tmpfs directories (secrets, tokens) left by agents that were killed before
    they could clean up: their names carry the agent's pid."""
    for path in MEMORY_ROOT.glob(f"{MEMORY_PREFIX}*"):
        pid = path.name[len(MEMORY_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(path, ignore_errors=True)


def _container_order(pod_dir: Path) -> list[str]:
    """Container names of a pod directory, main containers first (from the spec files)."""
    containers_dir = pod_dir / "containers"
    if not containers_dir.exists():
        return []
    order_file = pod_dir / "containers.txt"
    if order_file.exists():
        return order_file.read_text().split()
    return sorted(p.name for p in containers_dir.iterdir())
