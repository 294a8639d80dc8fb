"""What one tenant's FineTuneJob can do to the operator and to other tenants, on the real
control plane: a hostile metrics endpoint stalls nobody, and a Job (or config) someone else
planted is never taken as the operator's own, while the operator's own Job always is."""

from __future__ import annotations

import json
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.ports import free_port
from finetune_localcluster.waiting import wait_for
from finetune_operator.builders import Owner, build_job

from .conftest import OperatorHandle
from .ftj import FineTuneJobs

pytestmark = pytest.mark.e2e

S3_OUTPUT = {"output": {"s3": {"uri": "s3://outputs/tenants"}}}
HEALTHY_IMAGE = "tenant.test/healthy-trainer:1"
SLOW_IMAGE = "tenant.test/slow-metrics:1"

# A trainer image's `finetune-train`, as the node agent runs it in the pod: it ignores its
# config and serves metrics on the pod's address. The healthy one counts a step every
# half second; the hostile one promises a plausible body and sends one byte a second, so
# only a total deadline ends a read of it.
_STUB = """#!{python}
import os, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()
SLOW = {slow}

class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        if SLOW:
            self.send_response(200)
            self.send_header("Content-Length", "2048")
            self.end_headers()
            for _ in range(600):
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(1)
            return
        step = int((time.monotonic() - START) * 2)
        body = ("finetune_step %d\\nfinetune_total_steps 100000\\nfinetune_loss 1.5\\n" % step)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer((os.environ["POD_IP"], int(os.environ["FTO_METRICS_PORT"])), Metrics)
server.daemon_threads = True
server.serve_forever()
"""


def _image(root: Path, name: str, *, slow: bool) -> Path:
    bin_dir = root / name / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "finetune-train"
    script.write_text(_STUB.format(python=sys.executable, slow=slow))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


@pytest.fixture
def tenant_images(cluster: LocalCluster, tmp_path: Path) -> Iterator[None]:
    assert cluster.agent is not None
    cluster.agent.images.add(HEALTHY_IMAGE, _image(tmp_path, "healthy", slow=False))
    cluster.agent.images.add(SLOW_IMAGE, _image(tmp_path, "slow", slow=True))
    try:
        yield
    finally:
        cluster.agent.images.remove(HEALTHY_IMAGE)
        cluster.agent.images.remove(SLOW_IMAGE)


@pytest.fixture
def slow_polling(operator: OperatorHandle) -> Iterator[float]:
    """The operator polling every 2 s with a 1 s read deadline; restored afterwards."""
    interval = 2.0
    operator.stop()
    operator.start(progress_poll_seconds=interval, metrics_timeout_seconds=1.0)
    try:
        yield interval
    finally:
        operator.restart()


def _statuses(ftjs: FineTuneJobs) -> dict[str, dict[str, Any]]:
    items = json.loads(ftjs.kubectl("get", "finetunejobs", "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i.get("status") or {} for i in items}


def _step(status: dict[str, Any]) -> int:
    return int((status.get("progress") or {}).get("step") or -1)


def test_a_hostile_metrics_endpoint_stalls_no_one(
    ftjs: FineTuneJobs, cluster: LocalCluster, tenant_images: None, slow_polling: float
) -> None:
    interval = slow_polling
    spec = {"resources": {"gpus": 0}, **S3_OUTPUT}
    ftjs.apply("hostile", {**spec, "image": SLOW_IMAGE})
    healthy = [f"healthy-{i:02d}" for i in range(50)]
    manifests = "---\n".join(ftjs.manifest(n, {**spec, "image": HEALTHY_IMAGE}) for n in healthy)
    ftjs.kubectl("apply", "-f", "-", input=manifests)
    wait_for(
        lambda: all(_step(s) >= 0 for n, s in _statuses(ftjs).items() if n != "hostile"),
        timeout=240,
        interval=1,
        message="every healthy trainer to report progress",
    )
    assert _statuses(ftjs)["hostile"].get("phase") == "Running"

    # Every healthy FineTuneJob's progress moves within two poll intervals, while the
    # hostile endpoint is read (and holds a read slot for its deadline) every round.
    before = {n: _step(s) for n, s in _statuses(ftjs).items()}
    began = time.monotonic()
    wait_for(
        lambda: all(_step(s) > before[n] for n, s in _statuses(ftjs).items() if n in healthy),
        timeout=4 * interval,
        interval=0.2,
        message="every healthy FineTuneJob's progress to move",
    )
    assert time.monotonic() - began <= 2 * interval + 1.0  # one kubectl read of slack

    # A new FineTuneJob's events are handled at once: its Job exists and its status is
    # written within a second of its creation.
    assert cluster.api is not None
    path = f"/apis/finetune.dev/v1alpha1/namespaces/{ftjs.namespace}/finetunejobs"
    created = time.monotonic()
    cluster.api.create(
        path,
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "newcomer"},
            "spec": {**spec, "lifecycle": {"suspend": True}},
        },
    )
    wait_for(
        lambda: (
            (cluster.api.get(f"{path}/newcomer").get("status") or {}).get("phase") == "Suspended"
        ),
        timeout=5,
        interval=0.05,
        message="the newcomer's status",
    )
    assert time.monotonic() - created <= 1.0
    assert _statuses(ftjs)["hostile"].get("phase") == "Running"
    assert "progress" not in _statuses(ftjs)["hostile"]


def _plant(ftjs: FineTuneJobs, obj: dict[str, Any]) -> None:
    ftjs.kubectl("create", "-f", "-", input=json.dumps(obj))


def test_a_config_planted_under_the_childs_name_is_never_read(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    # While the operator is down, someone who may create ConfigMaps sees the new
    # FineTuneJob, works out its child's name from its uid, and plants a ConfigMap with
    # their own trainer config there, owner reference and all. The trainer's config rides
    # in the Job's pod template, so the planted one is never mounted or read.
    operator.stop()
    try:
        ftjs.apply("victim", {"lifecycle": {"suspend": True}, **S3_OUTPUT})
        owner = Owner.from_body(ftjs.get("victim"))
        planted = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                **owner.metadata(),
                "annotations": {"finetune.dev/config-hash": "0" * 16},
            },
            "data": {"config.yaml": "output: {s3: {uri: s3://attacker-bucket/loot}}\n"},
        }
        _plant(ftjs, planted)
    finally:
        operator.start()
    status = ftjs.wait_phase("victim", "Suspended")
    (job,) = ftjs.jobs("victim")
    pod = job["spec"]["template"]
    volumes = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert volumes == []  # no ConfigMap is mounted at all
    config = pod["metadata"]["annotations"]["finetune.dev/trainer-config"]
    assert "s3://outputs/tenants" in config and "attacker" not in config
    assert status["jobName"] == owner.child_name


def test_the_operators_own_children_are_adopted_after_a_restart(
    ftjs: FineTuneJobs, operator: OperatorHandle, cluster: LocalCluster
) -> None:
    # The operator created the Job, then stopped before it recorded the Job in the status:
    # the next one adopts it, with everything the API server added.
    operator.stop()
    try:
        ftjs.apply("interrupted", {"lifecycle": {"suspend": True}, **S3_OUTPUT})
        body = ftjs.get("interrupted")
        owner = Owner.from_body(body)
        spec = FineTuneJobSpec.model_validate(body["spec"])
        _plant(ftjs, build_job(spec, owner, operator.config))
    finally:
        operator.start()
    status = ftjs.wait_phase("interrupted", "Suspended")
    assert status["jobName"] == owner.child_name
    assert len(ftjs.jobs("interrupted")) == 1


def test_a_job_that_runs_something_else_is_never_adopted(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    operator.stop()
    try:
        ftjs.apply("target", {"lifecycle": {"suspend": True}, **S3_OUTPUT})
        body = ftjs.get("target")
        owner = Owner.from_body(body)
        spec = FineTuneJobSpec.model_validate(body["spec"])
        job = build_job(spec, owner, operator.config)
        job["spec"]["template"]["spec"]["containers"][0]["args"] = ["--exfiltrate"]
        _plant(ftjs, job)
    finally:
        operator.start()
    status = ftjs.wait_phase("target", "Failed")
    assert status["reason"] == "ChildConflict"
    assert "containers[0].args is not one the operator sets" in status["message"]


def test_the_liveness_probe_fails_when_a_reconcile_hangs(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    port = free_port()
    operator.stop()
    operator.start(liveness=True, liveness_endpoint=f"http://127.0.0.1:{port}/healthz")
    try:
        assert operator.running is not None
        runtime = operator.running.runtime
        ftjs.apply("probed", {"lifecycle": {"suspend": True}, **S3_OUTPUT})
        ftjs.wait_phase("probed", "Suspended")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            report = json.loads(answer.read())
        assert report["health"]["cached"]["finetunejobs"] >= 1
        # A worker stuck on one FineTuneJob far longer than its API calls' timeouts allow.
        with runtime.queue._cond:
            runtime.queue._active[("ml", "stuck")] = time.monotonic() - 3600
        time.sleep(11)  # kopf caches a probe's result for 10 s

        def failing() -> str | None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
            except urllib.error.HTTPError as error:
                return str(error.code)
            return None

        assert wait_for(failing, timeout=30, message="the probe to fail") == "500"
        with runtime.queue._cond:
            del runtime.queue._active[("ml", "stuck")]
    finally:
        operator.restart()
