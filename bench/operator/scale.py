"""The operator at N FineTuneJobs, against the API server's own floor, on the local control
plane (no node: every trainer pod stays Pending, as under a queue that admits nothing).

One invocation, one control plane, for each N in --sizes, side by side:

- floor: a plain client creates the operator's own objects, N Jobs, with
  --client-threads threads; the time until the Nth Job exists. Beside it, the floor of
  N ConfigMaps + N Jobs, what the operator created before the trainer's config moved into
  the Job, so earlier figures compare.
- operator: the operator runs as its own process, as its own ServiceAccount with the
  chart's ClusterRole and its default settings; the same client creates N FineTuneJobs
  with the same concurrency;
  the time until the Nth Job exists, and each FineTuneJob's create-to-Job latency.
- requests: from the API server's audit log, every request the operator's ServiceAccount
  made for these FineTuneJobs (reads and writes per FineTuneJob over their life, watches
  aside), and its request rate while N FineTuneJobs sit Pending and nothing happens.
- the operator's RSS and CPU seconds at N, and its RSS after all N are deleted.
- restart: the operator stopped and started with N FineTuneJobs in place: the time until
  it has reconciled every one, and the writes it made doing so.

    python bench/operator/scale.py --sizes 100,1000 --out bench/results/DATE-operator-scale.json

Needs the local control plane's binaries (make binaries) and the project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from finetune_api.spec import FineTuneJobSpec
from finetune_localcluster.binaries import find_binaries
from finetune_localcluster.controlplane import ControlPlane
from finetune_localcluster.kubeapi import api_client_for
from finetune_localcluster.ports import free_port
from finetune_operator.builders import Owner, build_job
from finetune_operator.config import OperatorConfig
from finetune_operator.naming import ANNOTATION_TRAINER_CONFIG

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS, OPERATOR_SA = "finetune-system", "finetune-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
# Every request once, when it completes (a watch when it ends), without bodies.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
"""
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
# A FineTuneJob as a user would write one: the example's training, an S3 output (no claim
# to bind), one GPU the cluster does not have.
SPEC: dict[str, Any] = {
    "model": {"name": "unsloth/gpt-oss-20b", "maxSeqLength": 1024},
    "dataset": {"name": "HuggingFaceH4/Multilingual-Thinking", "maxSamples": 1000},
    "training": {"maxSteps": 20, "perDeviceTrainBatchSize": 1, "gradientAccumulationSteps": 4},
    "output": {"s3": {"uri": "s3://finetune-outputs/bench"}},
    "resources": {"gpus": 1, "memory": "48Gi"},
}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@dataclass
class JobArrivals:
    """When each Job of a namespace first showed up on a watch (monotonic seconds)."""

    api: client.BatchV1Api
    namespace: str
    seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> JobArrivals:
        threading.Thread(target=self._watch, daemon=True).start()
        time.sleep(0.5)  # the watch is open before anything is created
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            response = self.api.list_namespaced_job(
                self.namespace, watch=True, timeout_seconds=60, _preload_content=False
            )
            for line in iter_resp_lines(response):
                event = json.loads(line)
                if event.get("type") == "ADDED":
                    name = event["object"]["metadata"]["name"]
                    self.seen.setdefault(name, time.monotonic())
                if self._stop.is_set():
                    break

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.seen)} of {count} Jobs after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


def owner(namespace: str, index: int) -> Owner:
    return Owner(
        name=f"run-{index:05d}", namespace=namespace, uid=f"00000000-0000-4000-8000-{index:012d}"
    )


def floor(
    admin: client.ApiClient, namespace: str, n: int, workers: int, *, config_maps: bool
) -> dict[str, Any]:
    """A plain client creates the operator's Jobs itself (with ``config_maps``, a ConfigMap
    holding the trainer's config beside each)."""
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    spec = FineTuneJobSpec.model_validate(SPEC)
    config = OperatorConfig()
    arrivals = JobArrivals(batch, namespace).start()

    def create(index: int) -> None:
        who = owner(namespace, index)
        job = build_job(spec, who, config)
        # No FineTuneJob owns it, and the operator is not to watch it: the same object,
        # with a label of its own.
        job["metadata"].pop("ownerReferences")
        job["metadata"]["labels"] = {"bench": "floor"}
        job["spec"]["template"]["metadata"]["labels"] = {"bench": "floor"}
        if config_maps:
            text = job["spec"]["template"]["metadata"]["annotations"][ANNOTATION_TRAINER_CONFIG]
            config_map = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": who.child_name, "labels": {"bench": "floor"}},
                "immutable": True,
                "data": {"config.yaml": text},
            }
            core.create_namespaced_config_map(namespace, config_map, _preload_content=False)
        batch.create_namespaced_job(namespace, job, _preload_content=False)

    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(n)))
    arrivals.wait(n, timeout=600)
    arrivals.stop()
    return {"seconds_to_nth_job": round(max(arrivals.seen.values()) - began, 2)}


def clear_floor(admin: client.ApiClient, namespace: str) -> None:
    """Delete the floor's objects and wait until its pods are gone, so the deletion does
    not load the operator's turn."""
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    batch.delete_collection_namespaced_job(namespace, propagation_policy="Background")
    core.delete_collection_namespaced_config_map(namespace)
    wait(
        lambda: (
            not core.list_namespaced_pod(namespace, limit=1).items
            and not batch.list_namespaced_job(namespace, limit=1).items
        ),
        600,
        "the floor's Jobs and pods to go",
    )


class OperatorProcess:
    """The operator as its own process, with its ServiceAccount's token."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.admin_kubeconfig = workdir / "admin.kubeconfig"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            "FTO_OPERATOR_METRICS_HOST": "127.0.0.1",
            "FTO_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "FTO_LIVENESS_ENDPOINT": "",
            "FTO_LOG_LEVEL": "WARNING",
        }
        log_file = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finetune_operator", "--kubeconfig", str(self.kubeconfig)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while self.metric("finetune_operator_workqueue_depth") is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the operator did not start; see " + log_file.name)
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def metric(self, name: str) -> float | None:
        return self.metrics().get(name)

    def memory(self) -> dict[str, float]:
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
        return fields

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def audit_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with path.open() as handle:
        for line in handle:
            event = json.loads(line)
            if event["user"]["username"] == OPERATOR_USER:
                events.append(event)
    return events


def _when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()


def requests_between(
    events: list[dict[str, Any]], start: float, end: float, namespace: str | None = None
) -> dict[str, int]:
    """The operator's requests completed in [start, end) (wall-clock seconds), watches
    aside, by verb; only those about ``namespace`` when it is given."""
    counts: dict[str, int] = {}
    for event in events:
        if event["verb"] == "watch" or not start <= _when(event) < end:
            continue
        ref = event.get("objectRef") or {}
        if namespace is not None and ref.get("namespace") != namespace:
            continue
        resource = ref.get("resource", "") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        what = f"{event['verb']} {resource}"
        counts[what] = counts.get(what, 0) + 1
    return counts


def finetunejob(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"run-{index:05d}", "namespace": namespace},
        "spec": SPEC,
    }


def settled(custom: client.CustomObjectsApi, namespace: str, n: int) -> bool:
    """Whether every FineTuneJob's status says its pod waits for a node."""
    items = json.loads(
        custom.list_namespaced_custom_object(
            "finetune.dev", "v1alpha1", namespace, "finetunejobs", _preload_content=False
        ).data
    )["items"]
    reasons = [(i.get("status") or {}).get("reason") for i in items]
    return len(items) == n and all(r == "Unschedulable" for r in reasons)


def wait(predicate: Any, timeout: float, what: str, show: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}" + (f": {show()}" if show else ""))
        time.sleep(0.5)


def operator_run(
    admin: client.ApiClient,
    operator: OperatorProcess,
    audit_log: Path,
    namespace: str,
    n: int,
    workers: int,
    idle_seconds: float,
) -> dict[str, Any]:
    custom, batch = client.CustomObjectsApi(admin), client.BatchV1Api(admin)
    arrivals = JobArrivals(batch, namespace).start()
    created: dict[str, float] = {}
    cpu_before = operator.cpu_seconds()
    wall_start = time.time()

    def create(index: int) -> None:
        body = finetunejob(namespace, index)
        custom.create_namespaced_custom_object(
            "finetune.dev", "v1alpha1", namespace, "finetunejobs", body, _preload_content=False
        )
        created[body["metadata"]["name"]] = time.monotonic()

    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(n)))
    arrivals.wait(n, timeout=1800)
    arrivals.stop()
    to_nth = max(arrivals.seen.values()) - began
    latencies = sorted(
        arrivals.seen[job] - created[name]
        for name in created
        for job in arrivals.seen
        if job.startswith(name + "-")
    )
    log(f"  {n} Jobs after {to_nth:.1f}s; waiting for every status to settle")
    wait(lambda: settled(custom, namespace, n), 900, "every status to settle")
    settle_end = time.time()
    memory_at_n = operator.memory()
    cpu_at_n = operator.cpu_seconds() - cpu_before

    time.sleep(5)  # let the last events through
    idle_start = time.time()
    time.sleep(idle_seconds)
    idle_end = time.time()

    log("  restarting the operator with every FineTuneJob in place")
    operator.stop()
    restart_wall = time.time()
    restart_began = time.monotonic()
    operator.start()

    def reconciled_all() -> bool:
        values = operator.metrics()
        done = values.get('finetune_operator_reconciles_total{result="ok"}', 0) >= n
        return done and values.get("finetune_operator_workqueue_depth") == 0

    wait(reconciled_all, 600, "the restarted operator to reconcile every FineTuneJob")
    restart_seconds = time.monotonic() - restart_began
    time.sleep(5)
    restart_end = time.time()
    memory_after_restart = operator.memory()

    log("  deleting them")
    delete_wall = time.time()
    custom.delete_collection_namespaced_custom_object(
        "finetune.dev", "v1alpha1", namespace, "finetunejobs"
    )
    wait(
        lambda: (
            (operator.metric('finetune_operator_cached_objects{kind="finetunejobs"}') or 0) == 0
            and (operator.metric('finetune_operator_cached_objects{kind="jobs"}') or 0) == 0
            and (operator.metric('finetune_operator_cached_objects{kind="pods"}') or 0) == 0
        ),
        # The garbage collector deletes the Jobs and pods; on two cores, about 20 a second.
        max(300, n / 10),
        "the cache to empty",
        lambda: (
            {k: v for k, v in operator.metrics().items() if "cached" in k},
            subprocess.run(
                [
                    str(find_binaries().kubectl),
                    "--kubeconfig",
                    str(operator.admin_kubeconfig),
                    "get",
                    "jobs,pods",
                    "-n",
                    namespace,
                    "-o",
                    "wide",
                ],
                capture_output=True,
                text=True,
            ).stdout[:3000],
        ),
    )
    time.sleep(3)
    delete_end = time.time()
    memory_after_delete = operator.memory()

    events = audit_events(audit_log)
    life = requests_between(events, wall_start, settle_end + 5, namespace)
    life_after_restart = requests_between(events, delete_wall, delete_end, namespace)
    idle = requests_between(events, idle_start, idle_end)
    restart = requests_between(events, restart_wall, restart_end)
    writes = sum(v for k, v in life.items() if k.split()[0] in WRITE_VERBS)
    reads = sum(v for k, v in life.items() if k.split()[0] not in WRITE_VERBS)
    return {
        "seconds_to_nth_job": round(to_nth, 2),
        "create_to_job_p50": round(statistics.median(latencies), 3),
        "create_to_job_p99": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
        "requests_per_finetunejob": {
            "writes": round(writes / n, 2),
            "reads": round(reads / n, 2),
            "by_request": life,
            "on_deletion": life_after_restart,
        },
        "idle_requests_per_second": round(sum(idle.values()) / idle_seconds, 3),
        "idle_requests": idle,
        "rss_mib_at_n": memory_at_n.get("VmRSS"),
        "rss_peak_mib": memory_at_n.get("VmHWM"),
        "cpu_seconds_to_settle": round(cpu_at_n, 1),
        "rss_mib_after_restart": memory_after_restart.get("VmRSS"),
        "rss_mib_after_delete": memory_after_delete.get("VmRSS"),
        "restart_seconds_to_reconcile_all": round(restart_seconds, 2),
        "restart_requests": restart,
        "restart_writes": sum(v for k, v in restart.items() if k.split()[0] in WRITE_VERBS),
    }


def operator_identity(cp: ControlPlane, admin: client.ApiClient, workdir: Path) -> Path:
    """The operator's ServiceAccount, bound to the chart's ClusterRole, as a kubeconfig."""
    helm = find_binaries().helm
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "bench",
            str(REPO / "charts" / "finetune-operator"),
            "--namespace",
            OPERATOR_NS,
            "--kube-version",
            "v1.36.0",
            "--set",
            f"serviceAccount.name={OPERATOR_SA}",
            "--set",
            "crds.enabled=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
    objects = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] in wanted]
    objects = [
        o for o in objects if o["kind"] != "ServiceAccount" or o["metadata"]["name"] == OPERATOR_SA
    ]
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": OPERATOR_NS}})
    path = workdir / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    cp.kubectl(["apply", "-f", str(path)])
    cp.kubectl(["apply", "--server-side", "-f", str(REPO / "crds" / "finetunejobs.yaml")])
    wait(
        lambda: (
            cp.kubectl(
                [
                    "wait",
                    "--for=condition=Established",
                    "--timeout=5s",
                    "crd/finetunejobs.finetune.dev",
                ],
                check=False,
            ).returncode
            == 0
        ),
        60,
        "the CRD",
    )
    token = (
        client.CoreV1Api(admin)
        .create_namespaced_service_account_token(
            OPERATOR_SA,
            OPERATOR_NS,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
            ),
        )
        .status.token
    )
    assert cp.pki is not None
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cp.server, "certificate-authority": str(cp.pki.ca.cert)},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "local",
    }
    out = workdir / "operator.kubeconfig"
    out.write_text(yaml.safe_dump(kubeconfig))
    out.chmod(0o600)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated N")
    parser.add_argument(
        "--client-threads",
        type=int,
        default=8,
        help="threads of the floor's and the FineTuneJobs' client",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with ControlPlane(audit_policy=AUDIT_POLICY) as cp:
        assert cp.pki is not None
        admin = api_client_for(cp.server, cp.pki.ca.cert, cp.pki.admin.cert, cp.pki.admin.key)
        admin.configuration.connection_pool_maxsize = 4 * args.client_threads
        workdir = cp.state_dir
        operator = OperatorProcess(operator_identity(cp, admin, workdir), workdir)
        operator.start()
        results: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "client_threads": args.client_threads,
            "rss_mib_idle_empty": operator.memory().get("VmRSS"),
            "sizes": {},
        }
        core = client.CoreV1Api(admin)
        for n in sizes:
            log(f"N = {n}: the floor")
            core.create_namespace({"metadata": {"name": f"floor-{n}"}})
            core.create_namespace({"metadata": {"name": f"ftj-{n}"}})
            floor_result = floor(admin, f"floor-{n}", n, args.client_threads, config_maps=False)
            log(f"  {floor_result}")
            clear_floor(admin, f"floor-{n}")
            log(f"N = {n}: the floor with ConfigMaps")
            floor_cm = floor(admin, f"floor-{n}", n, args.client_threads, config_maps=True)
            log(f"  {floor_cm}")
            clear_floor(admin, f"floor-{n}")
            log(f"N = {n}: the operator")
            operator_result = operator_run(
                admin, operator, cp.audit_log, f"ftj-{n}", n, args.client_threads, args.idle_seconds
            )
            took = operator_result["seconds_to_nth_job"]
            results["sizes"][str(n)] = {
                "floor": floor_result,
                "floor_with_configmaps": floor_cm,
                "operator": operator_result,
                "time_to_nth_job_ratio": round(took / floor_result["seconds_to_nth_job"], 2),
                "time_to_nth_job_ratio_to_configmap_floor": round(
                    took / floor_cm["seconds_to_nth_job"], 2
                ),
            }
            log(f"  {json.dumps(results['sizes'][str(n)])}")
            # Each size as it completes: a larger one that fails keeps the smaller ones.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        operator.stop()
    log(f"results in {args.out}")


if __name__ == "__main__":
    main()
