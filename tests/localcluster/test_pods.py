"""The node agent runs real pods scheduled by the real scheduler and driven by the real
Job, garbage-collector and PodSecurity machinery."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from finetune_localcluster import manifests
from finetune_localcluster.kubeapi import KubeAPI
from finetune_localcluster.podquery import container_state, get_pod, job_condition, job_pods

pytestmark = pytest.mark.e2e

WaitFor = Callable[..., Any]


def test_job_runs_a_pod_to_completion(
    api: KubeAPI, namespace: str, wait_for: WaitFor, pod_logs: Any
) -> None:
    spec = manifests.pod_spec(
        [manifests.container("main", ["python", "-c", "print('trained', 6 * 7)"])]
    )
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", manifests.job("ok", namespace, spec))
    wait_for(lambda: job_condition(api, namespace, "ok", "Complete"), 60, message="Job Complete")
    (pod,) = job_pods(api, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = container_state(pod)["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert pod["spec"]["nodeName"] in ("gpu-node-0", "gpu-node-1")
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"]["status"] == "True"
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "PodCompleted"
    assert pod_logs(namespace, pod["metadata"]["name"]) == "trained 42\n"


def test_failing_job_reports_exit_code_and_termination_message(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    script = "echo 'bad config: lora.rank' > /dev/termination-log; exit 78"
    spec = manifests.pod_spec([manifests.container("main", ["bash", "-c", script])])
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", manifests.job("bad", namespace, spec))
    wait_for(lambda: job_condition(api, namespace, "bad", "Failed"), 60, message="Job Failed")
    (pod,) = job_pods(api, namespace, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = container_state(pod)["terminated"]
    assert terminated["exitCode"] == 78
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "bad config: lora.rank\n"


def test_fallback_to_logs_on_error(api: KubeAPI, namespace: str, wait_for: WaitFor) -> None:
    spec = manifests.pod_spec(
        [
            manifests.container(
                "main",
                ["bash", "-c", "echo first; echo 'Traceback: boom' >&2; exit 1"],
                terminationMessagePolicy="FallbackToLogsOnError",
            )
        ]
    )
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("crash", namespace, spec))
    terminated = wait_for(
        lambda: container_state(get_pod(api, namespace, "crash")).get("terminated"),
        30,
        message="the container to terminate",
    )
    assert terminated["message"] == "first\nTraceback: boom"


def test_env_from_secret_configmap_and_downward_api(
    api: KubeAPI, namespace: str, wait_for: WaitFor, pod_logs: Any
) -> None:
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "hf-token"}, "stringData": {"token": "s3cr3t"}},
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"mode": "fast", "level": "3"}},
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {
            "name": "ABSENT",
            "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
        },
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "value": "hello from $(POD_NAME)"},
    ]
    script = (
        "import os\n"
        "for k in ['TOKEN','MODE','POD_IP','POD_NAME','NODE','GREETING','CFG_level']:\n"
        "    print(f'{k}={os.environ[k]}')\n"
        "print('ABSENT' in os.environ)\n"
    )
    container = manifests.container(
        "main",
        ["python", "-c", script],
        env=env,
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        manifests.pod("envs", namespace, manifests.pod_spec([container])),
    )
    wait_for(
        lambda: get_pod(api, namespace, "envs")["status"]["phase"] == "Succeeded",
        30,
        message="pod envs to succeed",
    )
    pod = get_pod(api, namespace, "envs")
    lines = pod_logs(namespace, "envs").splitlines()
    assert lines == [
        "TOKEN=s3cr3t",
        "MODE=fast",
        f"POD_IP={pod['status']['podIP']}",
        "POD_NAME=envs",
        f"NODE={pod['spec']['nodeName']}",
        "GREETING=hello from envs",
        "CFG_level=3",
        "False",
    ]
    assert pod["status"]["podIP"].startswith("127.0.0.")
    assert pod["status"]["podIP"] != "127.0.0.1"


def test_missing_secret_is_a_create_container_config_error_until_created(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    container = manifests.container("main", ["true"], env=env)
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        manifests.pod("waits", namespace, manifests.pod_spec([container])),
    )
    waiting = wait_for(
        lambda: (
            container_state(get_pod(api, namespace, "waits")).get("waiting", {}).get("reason")
            == "CreateContainerConfigError"
            and container_state(get_pod(api, namespace, "waits"))["waiting"]
        ),
        30,
        message="CreateContainerConfigError",
    )
    assert waiting["message"] == 'secret "later" not found'
    assert get_pod(api, namespace, "waits")["status"]["phase"] == "Pending"
    # Kubelet retries: once the Secret exists, the container starts.
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "later"}, "stringData": {"token": "t"}},
    )
    wait_for(
        lambda: get_pod(api, namespace, "waits")["status"]["phase"] == "Succeeded",
        30,
        message="the pod to run once the Secret exists",
    )


def test_image_on_an_invalid_registry_backs_off(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    container = manifests.container("main", ["true"], image="registry.invalid/team/trainer:1")
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        manifests.pod("nopull", namespace, manifests.pod_spec([container])),
    )
    waiting = wait_for(
        lambda: (
            container_state(get_pod(api, namespace, "nopull")).get("waiting", {}).get("reason")
            == "ImagePullBackOff"
            and container_state(get_pod(api, namespace, "nopull"))["waiting"]
        ),
        30,
        message="ImagePullBackOff",
    )
    assert waiting["message"] == 'Back-off pulling image "registry.invalid/team/trainer:1"'
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any("no such host" in e["message"] for e in events if e["reason"] == "Failed")


def test_more_gpus_than_any_node_has_is_unschedulable(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    container = manifests.container("main", ["true"], resources={"limits": {"nvidia.com/gpu": "3"}})
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        manifests.pod("greedy", namespace, manifests.pod_spec([container])),
    )

    def unschedulable() -> dict[str, Any] | None:
        conditions = get_pod(api, namespace, "greedy")["status"].get("conditions", [])
        return next(
            (c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"),
            None,
        )

    condition = wait_for(unschedulable, 30, message="PodScheduled=False")
    assert condition["reason"] == "Unschedulable"
    assert "2 Insufficient nvidia.com/gpu" in condition["message"]
    assert get_pod(api, namespace, "greedy")["status"]["phase"] == "Pending"


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(
    api: KubeAPI, namespace: str, wait_for: WaitFor, pod_logs: Any
) -> None:
    # The process ignores SIGTERM after noting it, so only SIGKILL can end it.
    script = (
        "import signal, sys, time\n"
        "def on_term(*_):\n"
        "    print('got SIGTERM', flush=True)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    spec = manifests.pod_spec([manifests.container("main", ["python", "-c", script])])
    pod = manifests.pod("stubborn", namespace, spec, finalizers=["test.finetune.dev/hold"])
    path = f"/api/v1/namespaces/{namespace}/pods/stubborn"
    api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    try:
        wait_for(
            lambda: "ready" in pod_logs(namespace, "stubborn"), 30, message="the process to start"
        )
        started = time.monotonic()
        api.delete(path, {"gracePeriodSeconds": 2})
        # The finalizer keeps the object, so the final status stays readable.
        terminated = wait_for(
            lambda: container_state(get_pod(api, namespace, "stubborn")).get("terminated"),
            30,
            message="the container to be killed",
        )
        elapsed = time.monotonic() - started
        assert "got SIGTERM" in pod_logs(namespace, "stubborn")
        assert terminated["exitCode"] == 137  # 128 + SIGKILL
        assert elapsed >= 2.0
        assert get_pod(api, namespace, "stubborn")["status"]["phase"] == "Failed"
    finally:
        # Also after a failed assertion: a pod left with the finalizer stays Terminating
        # and holds up the deletion of the namespace.
        api.patch(path, {"metadata": {"finalizers": None}})
    wait_for(
        lambda: api.get_or_none(f"/api/v1/namespaces/{namespace}/pods/stubborn") is None,
        30,
        message="the pod to be gone",
    )


def test_pod_port_is_reachable_on_its_pod_ip(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    script = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "        self.wfile.write(os.environ['POD_NAME'].encode())\n"
        "http.server.HTTPServer((os.environ['POD_IP'], 9090), H).serve_forever()\n"
    )
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    container = manifests.container(
        "main", ["python", "-c", script], env=env, ports=[{"containerPort": 9090}]
    )
    spec = manifests.pod_spec([container], grace_seconds=1)
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("web", namespace, spec))
    pod_ip = wait_for(
        lambda: get_pod(api, namespace, "web")["status"].get("podIP"), 30, message="a pod IP"
    )

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{pod_ip}:9090/", timeout=2) as response:
            return str(response.read().decode())

    assert wait_for(fetch, 30, message=f"http://{pod_ip}:9090 to answer") == "web"
    pod = get_pod(api, namespace, "web")
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"


def test_deleting_a_job_garbage_collects_its_pods(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    spec = manifests.pod_spec([manifests.container("main", ["sleep", "300"])], grace_seconds=1)
    api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", manifests.job("gc", namespace, spec))
    wait_for(
        lambda: [p for p in job_pods(api, namespace, "gc") if p["status"]["phase"] == "Running"],
        30,
        message="the Job's pod to run",
    )
    api.delete(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/gc", {"propagationPolicy": "Background"}
    )
    wait_for(lambda: not job_pods(api, namespace, "gc"), 60, message="the pods to be deleted")
    assert api.get_or_none(f"/apis/batch/v1/namespaces/{namespace}/jobs/gc") is None


def test_container_without_command_is_reported(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    container = manifests.container("main", [])
    del container["command"]
    api.create(
        f"/api/v1/namespaces/{namespace}/pods",
        manifests.pod("nocmd", namespace, manifests.pod_spec([container])),
    )
    waiting = wait_for(
        lambda: (
            container_state(get_pod(api, namespace, "nocmd")).get("waiting", {}).get("reason")
            == "CreateContainerError"
            and container_state(get_pod(api, namespace, "nocmd"))["waiting"]
        ),
        30,
        message="CreateContainerError",
    )
    assert "has no command" in waiting["message"]


def test_on_failure_restarts_count_up(api: KubeAPI, namespace: str, wait_for: WaitFor) -> None:
    # Fails twice, then succeeds: the attempt counter lives on an emptyDir.
    script = "n=$(cat /state/n 2>/dev/null || echo 0); echo $((n+1)) > /state/n; [ $n -ge 2 ]"
    container = manifests.container(
        "main", ["bash", "-c", script], volume_mounts=[{"name": "w", "mountPath": "/state"}]
    )
    spec = manifests.pod_spec(
        [container], restart_policy="OnFailure", volumes=[{"name": "w", "emptyDir": {}}]
    )
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("flaky", namespace, spec))
    wait_for(
        lambda: get_pod(api, namespace, "flaky")["status"]["phase"] == "Succeeded",
        60,
        message="the pod to succeed after restarts",
    )
    status = get_pod(api, namespace, "flaky")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_init_containers_run_first(
    api: KubeAPI, namespace: str, wait_for: WaitFor, pod_logs: Any
) -> None:
    shared = [{"name": "shared", "mountPath": "/shared"}]
    init = manifests.container(
        "prepare", ["bash", "-c", "echo prepared > /shared/ready"], volume_mounts=shared
    )
    main = manifests.container("main", ["cat", "/shared/ready"], volume_mounts=shared)
    spec = manifests.pod_spec(
        [main], initContainers=[init], volumes=[{"name": "shared", "emptyDir": {}}]
    )
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("init", namespace, spec))
    wait_for(
        lambda: get_pod(api, namespace, "init")["status"]["phase"] == "Succeeded",
        30,
        message="the pod to succeed",
    )
    status = get_pod(api, namespace, "init")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert pod_logs(namespace, "init") == "prepared\n"
    assert pod_logs(namespace, "init", container="prepare") == ""


def test_crash_looping_pod_is_deleted_cleanly(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    spec = manifests.pod_spec(
        [manifests.container("main", ["bash", "-c", "exit 2"])], restart_policy="Always"
    )
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("crashy", namespace, spec))
    wait_for(
        lambda: (
            container_state(get_pod(api, namespace, "crashy")).get("waiting", {}).get("reason")
            == "CrashLoopBackOff"
        ),
        30,
        message="CrashLoopBackOff",
    )
    assert get_pod(api, namespace, "crashy")["status"]["phase"] == "Running"
    api.delete(f"/api/v1/namespaces/{namespace}/pods/crashy")
    wait_for(
        lambda: api.get_or_none(f"/api/v1/namespaces/{namespace}/pods/crashy") is None,
        30,
        message="the pod to be gone",
    )
