"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, built from the Kubernetes Go modules (see build-binaries.sh).

Every instance picks free ports and its own state directory, so several can run at once.
All components bind to 127.0.0.1 only and talk TLS with client certificates from a
throwaway PKI. `stop()` (also run at interpreter exit) leaves no process behind, and the
components die with their owner even if it is killed (see processes.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_localcluster.binaries import Binaries, find_binaries
from finetune_localcluster.kubeconfig import write_kubeconfig
from finetune_localcluster.pki import FRONT_PROXY_CLIENT_NAME, ClusterPKI, create_cluster_pki
from finetune_localcluster.ports import free_port
from finetune_localcluster.processes import ManagedProcess

log = logging.getLogger(__name__)

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Set to keep a control plane's state directory (logs, certificates) after it stops.
KEEP_STATE_ENV = "FTO_KEEP_CLUSTER_STATE"

# Everything a cluster running Jobs, PVCs and Deployments needs, named explicitly so a new
# upstream default cannot silently change the tests. Cloud and bootstrap-token controllers
# are left out: nothing here uses them.
CONTROLLERS = [
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-expander-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "ephemeral-volume-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "deployment-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "resourcequota-controller",
    "ttl-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
    "clusterrole-aggregation-controller",
    "legacy-serviceaccount-token-cleaner-controller",
    "service-cidr-controller",
]


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries its log tail."""


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @staticmethod
    def choose() -> Ports:
        return Ports(free_port(), free_port(), free_port(), free_port(), free_port())


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    Use as a context manager, or call start()/stop(). After start(): `kubeconfig` is the
    admin kubeconfig (client certificate in system:masters), `server` the apiserver URL."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        binaries: Binaries | None = None,
        keep_state: bool | None = None,
        start_timeout: float = 120.0,
        audit_policy: str | None = None,
    ) -> None:
        """``audit_policy``: an audit.k8s.io/v1 Policy (YAML text); the API server then
        writes its audit log, one JSON event per line, to ``audit_log``."""
        self._owns_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="localcluster-")).resolve()
        self._binaries = binaries
        self.keep_state = (
            keep_state if keep_state is not None else bool(os.environ.get(KEEP_STATE_ENV))
        )
        self.start_timeout = start_timeout
        self.processes: dict[str, ManagedProcess] = {}
        self.ports: Ports | None = None
        self.pki: ClusterPKI | None = None
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.logs_dir = self.state_dir / "logs"
        self.audit_policy = audit_policy
        self.audit_log = self.logs_dir / "audit.log"

    # --- public API -----------------------------------------------------------------------
    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = find_binaries()
        return self._binaries

    @property
    def server(self) -> str:
        assert self.ports is not None, "control plane not started"
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until the cluster can run pods.

        A port taken by another process between choosing and binding it makes one attempt
        fail; the start is then retried with new ports."""
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.pki = create_cluster_pki(self.state_dir / "pki", KUBERNETES_SERVICE_IP)
        last_error: ControlPlaneError | None = None
        for attempt in range(3):
            self.ports = Ports.choose()
            try:
                self._start_components()
                break
            except ControlPlaneError as error:
                self._stop_processes()
                last_error = error
                if "address already in use" not in str(error):
                    raise
                log.warning("port collision on attempt %d, retrying", attempt + 1)
        else:
            assert last_error is not None
            raise last_error
        log.info(
            "control plane ready in %.1fs at %s (kubeconfig %s)",
            time.monotonic() - started,
            self.server,
            self.kubeconfig,
        )

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and remove the state directory
        unless it was given by the caller or keep_state is set."""
        self._stop_processes()
        if self._owns_state_dir and not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def get(self, path: str) -> Any:
        """GET an apiserver path as admin and decode the JSON answer."""
        with self._open(path) as response:
            return json.loads(response.read())

    def kubectl(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built for this cluster with the admin kubeconfig (argv, no shell)."""
        return subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    # --- starting -------------------------------------------------------------------------
    def _start_components(self) -> None:
        assert self.pki is not None and self.ports is not None
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_cert=self.pki.ca.cert,
            client=self.pki.admin,
            user="admin",
            cluster="localcluster",
        )
        deadline = time.monotonic() + self.start_timeout
        etcd = self._launch("etcd", self._etcd_argv())
        self._wait(etcd, deadline, self._etcd_healthy, "etcd to report health")
        apiserver = self._launch("kube-apiserver", self._apiserver_argv())
        self._wait(apiserver, deadline, self._apiserver_ready, "kube-apiserver /readyz")
        kcm = self._launch("kube-controller-manager", self._controller_manager_argv())
        scheduler = self._launch("kube-scheduler", self._scheduler_argv())
        self._wait(
            kcm,
            deadline,
            lambda: _https_ok(self.ports.controller_manager),  # type: ignore[union-attr]
            "kube-controller-manager /healthz",
        )
        self._wait(
            scheduler,
            deadline,
            lambda: _https_ok(self.ports.scheduler),  # type: ignore[union-attr]
            "kube-scheduler /healthz",
        )
        # Pods cannot be created in a namespace before its default ServiceAccount exists,
        # and their kube-api-access volume needs the published root CA.
        self._wait(
            kcm,
            deadline,
            self._service_account_machinery_ready,
            "the default ServiceAccount and kube-root-ca.crt",
        )

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.logs_dir / f"{name}.log", cwd=self.state_dir)
        proc.start()
        self.processes[name] = proc
        return proc

    def _wait(
        self,
        proc: ManagedProcess,
        deadline: float,
        ready: Callable[[], bool],
        what: str,
    ) -> None:
        interval = 0.05
        while True:
            if not proc.running():
                raise ControlPlaneError(
                    f"{proc.name} exited while waiting for {what}; log {proc.log_path}:\n"
                    + proc.log_tail()
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out waiting for {what}; log {proc.log_path}:\n" + proc.log_tail()
                )
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    def _stop_processes(self) -> None:
        # Reverse start order: clients before the apiserver, the apiserver before etcd.
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()

    # --- readiness probes ----------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return context

    def _open(self, path: str) -> Any:
        return urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=5)

    def _etcd_healthy(self) -> bool:
        assert self.pki is not None and self.ports is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.etcd_client.cert), str(self.pki.etcd_client.key))
        url = f"https://127.0.0.1:{self.ports.etcd_client}/health"
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        try:
            with self._open("/readyz") as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def _service_account_machinery_ready(self) -> bool:
        try:
            self.get("/api/v1/namespaces/default/serviceaccounts/default")
            self.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            return True
        except (OSError, urllib.error.HTTPError):
            return False

    # --- command lines --------------------------------------------------------------------
    def _etcd_argv(self) -> list[str]:
        assert self.pki is not None and self.ports is not None
        client = f"https://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            str(self.binaries.etcd),
            "--name=localcluster",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            # A single member never talks to peers; the peer URL only has to be unique.
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=localcluster={peer}",
            "--initial-cluster-state=new",
            f"--cert-file={self.pki.etcd_server.cert}",
            f"--key-file={self.pki.etcd_server.key}",
            f"--trusted-ca-file={self.pki.ca.cert}",
            "--client-cert-auth=true",
            # Throwaway data: durability buys nothing and fsync is slow on shared disks.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=1073741824",
        ]

    def _apiserver_argv(self) -> list[str]:
        assert self.pki is not None and self.ports is not None
        pki = self.pki
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=https://127.0.0.1:{self.ports.etcd_client}",
            f"--etcd-cafile={pki.ca.cert}",
            f"--etcd-certfile={pki.etcd_client.cert}",
            f"--etcd-keyfile={pki.etcd_client.key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            # The defaults (PodSecurity, ServiceAccount, NamespaceLifecycle, LimitRanger,
            # ResourceQuota, webhooks, ValidatingAdmissionPolicy, ...) plus NodeRestriction,
            # which confines the node agent to its own Node and pods as it does a kubelet.
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            # Privileged pods must reach PodSecurity, which rejects them per namespace.
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            # Endpoints may not hold loopback addresses, so the `kubernetes` Service's
            # endpoints are not reconciled; pods reach the apiserver at 127.0.0.1 instead.
            "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
            f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--event-ttl=30m",
            "--v=1",
            *self._audit_args(),
        ]

    def _audit_args(self) -> list[str]:
        if self.audit_policy is None:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(self.audit_policy)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            # Batched, as a production API server would, but flushed within a second.
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
            "--audit-log-maxsize=0",
        ]

    def _component_kubeconfig(self, name: str, user: str) -> Path:
        assert self.pki is not None
        client = self.pki.controller_manager if "controller" in name else self.pki.scheduler
        return write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig",
            server=self.server,
            ca_cert=self.pki.ca.cert,
            client=client,
            user=user,
            cluster="localcluster",
        )

    def _controller_manager_argv(self) -> list[str]:
        assert self.pki is not None and self.ports is not None
        kubeconfig = self._component_kubeconfig(
            "kube-controller-manager", "system:kube-controller-manager"
        )
        return [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--controllers={','.join(CONTROLLERS)}",
            # Each controller acts with its own ServiceAccount's RBAC, as in a real cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca.cert}",
            f"--cluster-signing-cert-file={self.pki.ca.cert}",
            f"--cluster-signing-key-file={self.pki.ca.key}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        assert self.ports is not None
        kubeconfig = self._component_kubeconfig("kube-scheduler", "system:kube-scheduler")
        return [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]


def _https_ok(port: int) -> bool:
    """Whether a component's /healthz on loopback answers 200. Its serving certificate is
    self-signed by the component itself, so only reachability is checked here."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(OSError, urllib.error.HTTPError):
        url = f"https://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    return False
