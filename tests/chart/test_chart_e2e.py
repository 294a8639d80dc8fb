"""The chart on the local control plane (real kube-apiserver with RBAC and PodSecurity
admission, real controllers, the node agent running pods as local processes).

Two ways of running the operator, both with the chart's own ServiceAccount and no other
credentials:

- namespaced mode (Roles): the chart's Deployment itself. The node agent runs its
  container command, `finetune-operator`, with the pod's projected ServiceAccount token
  and the `FTO_*` environment the chart renders, so the operator under test is exactly
  the one the chart installs;
- cluster mode (ClusterRole): the chart with `operator.replicas=0`, and the operator run
  in-process with a token minted through the TokenRequest API for the chart's
  ServiceAccount (a cluster-wide operator pod would also reconcile other tests'
  FineTuneJobs in this shared cluster).

Every test namespace enforces the `restricted` Pod Security Standard, so each operator and
trainer pod that runs here was admitted under it.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from finetune_localcluster.binaries import Binaries
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.pytest_plugin import RESTRICTED_LABELS
from finetune_localcluster.waiting import wait_for
from finetune_operator.config import OperatorConfig
from finetune_operator.runner import EmbeddedOperator

from .cluster_helpers import (
    LOCAL_VALUES,
    Release,
    can_i_list,
    json_of,
    merged,
    mint_token,
    token_client,
)
from .helm import CHART
from .operator_api_calls import required_rules

pytestmark = pytest.mark.e2e

CRD_NAME = "finetunejobs.finetune.dev"
TRAINER_SA = "finetune-trainer"


def _suffix() -> str:
    return uuid.uuid4().hex[:6]


def _trainer_image() -> str:
    """A trainer image unique to one release: a Job carrying it was built by that
    release's operator, not by another operator running in the shared cluster. The tag
    starts with a letter: a bare hex suffix such as 12e345 is a number to YAML."""
    return f"registry.example/chart-e2e/trainer:t{_suffix()}"


def _image_values(image: str) -> dict[str, Any]:
    repository, tag = image.removeprefix("registry.example/").split(":")
    return {
        "trainer": {"image": {"registry": "registry.example", "repository": repository, "tag": tag}}
    }


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny gpt-oss model and a small dataset, generated once for this module."""
    from finetune_trainer.fixtures import write_tiny_dataset, write_tiny_model

    root = tmp_path_factory.mktemp("tiny-inputs")
    write_tiny_model(root / "model", seed=0)
    write_tiny_dataset(root / "train.jsonl", rows=16, seed=0)
    return root


def _tiny_finetunejob(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {
            "pvc": {"claimName": "inputs", "path": "model"},
            "maxSeqLength": 256,
            "loadIn4bit": False,
        },
        "dataset": {"pvc": {"claimName": "inputs", "path": "train.jsonl"}, "maxSamples": 6},
        "lora": {"rank": 8, "alpha": 16},
        "training": {
            "maxSteps": 2,
            "perDeviceTrainBatchSize": 2,
            "gradientAccumulationSteps": 1,
            "learningRate": 0.01,
            "warmupSteps": 0,
            "saveSteps": 1,
            "loggingSteps": 1,
        },
        "output": {"pvc": {"claimName": "outputs"}},
        "resources": {"gpus": 1},
        "serviceAccountName": TRAINER_SA,
    }
    body.update(spec)
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def _create(cluster: LocalCluster, obj: dict[str, Any]) -> dict[str, Any]:
    assert cluster.api is not None
    namespace = obj["metadata"]["namespace"]
    created: dict[str, Any] = cluster.api.create(
        f"/apis/finetune.dev/v1alpha1/namespaces/{namespace}/finetunejobs", obj
    )
    return created


def _ftj(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    assert cluster.api is not None
    result: dict[str, Any] = cluster.api.get(
        f"/apis/finetune.dev/v1alpha1/namespaces/{namespace}/finetunejobs/{name}"
    )
    return result


class OperatorFailing(AssertionError):
    """The operator under test is failing: waiting longer cannot help."""


def _wait_phase(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    phases: set[str],
    timeout: float,
    diagnose: Callable[[], str] = lambda: "",
    healthy: Callable[[], bool] = lambda: True,
) -> dict[str, Any]:
    """Wait for the FineTuneJob to reach one of ``phases``; stop at once if ``healthy``
    says the operator is failing (the assertion then shows ``diagnose()``)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if not healthy():
            raise OperatorFailing(f"the operator is failing while {name} waits\n{diagnose()}")
        status = _ftj(cluster, namespace, name).get("status") or {}
        if status.get("phase") in phases:
            return status
        time.sleep(0.5)
    raise AssertionError(
        f"{name} did not reach {sorted(phases)} in {timeout:.0f}s\n"
        f"status: {json.dumps(status)}\n{diagnose()}"
    )


def _inputs_pvc(make_pvc: Any, namespace: str, tiny_inputs: Path) -> Path:
    inputs = make_pvc(namespace, "inputs")
    shutil.copytree(tiny_inputs / "model", inputs / "model")
    shutil.copy(tiny_inputs / "train.jsonl", inputs / "train.jsonl")
    return make_pvc(namespace, "outputs")  # type: ignore[no-any-return]


# --- namespaced mode: the chart's Deployment runs the operator --------------------------------


@pytest.fixture(scope="module")
def namespaced_release(
    cluster: LocalCluster,
    localcluster_binaries: Binaries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    namespace = cluster.create_namespace(f"chart-ns-{_suffix()}", dict(RESTRICTED_LABELS))
    image = _trainer_image()
    values = merged(merged(LOCAL_VALUES, {"watchNamespaces": [namespace]}), _image_values(image))
    release = Release(
        cluster,
        localcluster_binaries.helm,
        f"fto-{_suffix()}",
        namespace,
        values,
        tmp_path_factory.mktemp("release"),
    )
    release.install()
    try:
        yield release
    finally:
        release.uninstall()
        cluster.delete_namespace(namespace)


def _operator_pod(cluster: LocalCluster, release: Release) -> dict[str, Any]:
    pods = json_of(
        cluster,
        "get",
        "pods",
        "-n",
        release.namespace,
        "-l",
        "app.kubernetes.io/component=operator",
    )["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["status"] for p in pods]
    return running[0]  # type: ignore[no-any-return]


def _operator_restarts(cluster: LocalCluster, release: Release) -> int:
    statuses = _operator_pod(cluster, release)["status"].get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _operator_log(cluster: LocalCluster, release: Release, previous: bool = False) -> str:
    """The operator container's log (with ``previous``, its last crashed run's, if any)."""
    name = _operator_pod(cluster, release)["metadata"]["name"]
    if previous and _operator_restarts(cluster, release):
        return cluster.pod_logs(release.namespace, name, "operator", previous=True)
    return cluster.pod_logs(release.namespace, name, "operator")


def test_install_notes_tell_how_to_run_the_example(namespaced_release: Release) -> None:
    notes = namespaced_release.output.split("NOTES:", 1)[1]
    assert f"It manages FineTuneJobs in: {namespaced_release.namespace}." in notes
    assert "kubectl apply -f examples/finetunejob.yaml" in notes
    # The inline FineTuneJob is one the API server accepts as it stands (placed in this
    # release's namespace: the example's ml does not exist here).
    inline = notes.split("<<'FTJ'\n", 1)[1].split("\n       FTJ\n", 1)[0]
    manifest = yaml.safe_load(textwrap.dedent(inline))
    assert manifest["metadata"]["namespace"] == "ml"
    manifest["metadata"]["namespace"] = namespaced_release.namespace
    namespaced_release.cluster.kubectl(
        ["apply", "--dry-run=server", "-f", "-"], input=yaml.safe_dump(manifest)
    )
    assert "--for=condition=Ready" in notes
    # This release watches only its own namespace, so the notes say how to place the example.
    assert "The example's namespace, ml, is not in watchNamespaces" in notes


def test_the_operator_pod_runs_under_restricted_pod_security(
    cluster: LocalCluster, namespaced_release: Release
) -> None:
    namespace = json_of(cluster, "get", "namespace", namespaced_release.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _operator_pod(cluster, namespaced_release)
    assert pod["spec"]["serviceAccountName"] == namespaced_release.fullname
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # A control: the namespace really rejects what restricted forbids.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": namespaced_release.namespace},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox:1.37",
                    "command": ["true"],
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    rejected = cluster.kubectl(
        ["create", "--dry-run=server", "-f", "-"], input=json.dumps(privileged), check=False
    )
    assert rejected.returncode != 0
    assert "violates PodSecurity" in rejected.stderr


def test_the_installed_operator_trains_a_finetunejob_to_success(
    cluster: LocalCluster, namespaced_release: Release, make_pvc: Any, tiny_inputs: Path
) -> None:
    release = namespaced_release
    namespace = release.namespace
    outputs = _inputs_pvc(make_pvc, namespace, tiny_inputs)
    created = _create(cluster, _tiny_finetunejob("tiny", namespace))

    def diagnose() -> str:
        return f"operator log tail:\n{_operator_log(cluster, release, previous=True)[-3000:]}"

    def operator_healthy() -> bool:
        log = _operator_log(cluster, release, previous=True)
        failing = ("Unauthorized", "Forbidden", "LoginError", "Traceback")
        return _operator_restarts(cluster, release) == 0 and not any(f in log for f in failing)

    status = _wait_phase(
        cluster, namespace, "tiny", {"Succeeded", "Failed"}, 300, diagnose, operator_healthy
    )
    assert status["phase"] == "Succeeded", (status, diagnose())
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert status["output"]["adapterUri"].startswith("pvc://outputs/")
    adapter = outputs / status["output"]["adapterUri"].removeprefix("pvc://outputs/")
    assert (adapter / "adapter_config.json").is_file()

    # This release's operator built the Job (its trainer image), wrote the final status
    # (its log), and did it with the chart's ServiceAccount: nothing was forbidden.
    job = json_of(cluster, "get", "job", status["jobName"], "-n", namespace)
    pod_spec = job["spec"]["template"]["spec"]
    env = {
        e["name"]: e.get("value")
        for e in _operator_pod(cluster, release)["spec"]["containers"][0]["env"]
    }
    assert pod_spec["containers"][0]["image"] == env["FTO_TRAINER_IMAGE"]
    assert pod_spec["serviceAccountName"] == TRAINER_SA
    assert pod_spec["automountServiceAccountToken"] is False
    log = _operator_log(cluster, release)
    assert f"{namespace}/tiny: Succeeded" in log, log[-3000:]
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]

    # GitOps: the operator wrote only status; the object as applied is untouched.
    after = _ftj(cluster, namespace, "tiny")
    assert after["metadata"]["generation"] == created["metadata"]["generation"] == 1
    assert after["spec"] == created["spec"]
    assert not after["metadata"].get("finalizers")
    assert not after["metadata"].get("annotations")


def test_the_operator_may_do_exactly_what_it_uses(
    cluster: LocalCluster, namespaced_release: Release
) -> None:
    release = namespaced_release
    operator = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    trainer = f"system:serviceaccount:{release.namespace}:{TRAINER_SA}"
    # What any authenticated identity may do (self reviews, discovery): the baseline.
    baseline, baseline_urls = can_i_list(cluster, trainer, release.namespace)
    assert all(resource.startswith("selfsubject") for _, resource in baseline), baseline

    granted, urls = can_i_list(cluster, operator, release.namespace)
    assert urls == baseline_urls
    extra = {key: verbs - baseline.get(key, set()) for key, verbs in granted.items()}
    assert {key: verbs for key, verbs in extra.items() if verbs} == required_rules()

    # Outside the watched namespace: nothing beyond the baseline.
    assert can_i_list(cluster, operator, "default") == (baseline, baseline_urls)


def test_helm_upgrade_applies_a_changed_crd(
    cluster: LocalCluster, namespaced_release: Release, tmp_path: Path
) -> None:
    changed_chart = tmp_path / "finetune-operator"
    shutil.copytree(CHART, changed_chart)
    crd_file = changed_chart / "files" / "crds" / "finetunejobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    column = {"name": "UpgradeProbe", "type": "string", "jsonPath": ".status.reason", "priority": 1}
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(column)
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))

    def server_columns() -> list[str]:
        served = json_of(cluster, "get", "crd", CRD_NAME)
        return [c["name"] for c in served["spec"]["versions"][0]["additionalPrinterColumns"]]

    try:
        namespaced_release.upgrade(changed_chart)
        assert "UpgradeProbe" in server_columns()
    finally:
        namespaced_release.upgrade(CHART)
    assert "UpgradeProbe" not in server_columns()


# --- cluster mode: a ClusterRole, the operator in-process with a minted token ---------------


@pytest.fixture
def cluster_release(
    cluster: LocalCluster, localcluster_binaries: Binaries, namespace: str, tmp_path: Path
) -> Iterator[Release]:
    values = merged(
        merged(LOCAL_VALUES, {"operator": {"replicas": 0}}), _image_values(_trainer_image())
    )
    release = Release(
        cluster, localcluster_binaries.helm, f"ftc-{_suffix()}", namespace, values, tmp_path
    )
    release.install()
    try:
        yield release
    finally:
        release.uninstall()


def test_cluster_role_drives_a_finetunejob_with_a_token_for_the_chart_account(
    cluster: LocalCluster, kube: Any, cluster_release: Release, make_pvc: Any, tiny_inputs: Path
) -> None:
    release = cluster_release
    namespace = release.namespace
    instance = f"app.kubernetes.io/instance={release.name}"
    rbac = json_of(cluster, "get", "clusterrole,clusterrolebinding", "-l", instance)
    kinds = {o["kind"] for o in rbac["items"]}
    assert kinds == {"ClusterRole", "ClusterRoleBinding"}
    operator_user = f"system:serviceaccount:{namespace}:{release.fullname}"
    # Cluster-wide: the rules hold in a namespace the chart never heard of.
    granted, _ = can_i_list(cluster, operator_user, "kube-public")
    for key, verbs in required_rules().items():
        assert verbs <= granted.get(key, set()), key

    token = mint_token(kube, namespace, release.fullname)
    api_client = token_client(kube, token)
    # The token is the chart's account, not an admin: Secrets stay out of reach.
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(api_client).list_namespaced_secret(namespace)
    assert denied.value.status == 403

    _inputs_pvc(make_pvc, namespace, tiny_inputs)
    deployment = json_of(cluster, "get", "deployment", release.fullname, "-n", namespace)
    env = {
        e["name"]: e.get("value", "")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    settings = {k: v for k, v in env.items() if k.startswith("FTO_")}
    config = OperatorConfig.from_env(settings)
    # The chart's settings, watching this test's namespace only (other tests' FineTuneJobs
    # live in the same cluster), and no health endpoint inside the test process.
    config = OperatorConfig(
        **{**config.__dict__, "namespaces": (namespace,), "liveness_endpoint": None}
    )

    with EmbeddedOperator(api_client, config):
        # Suspended first: the operator creates the ConfigMap and a suspended Job.
        _create(cluster, _tiny_finetunejob("suspended", namespace, lifecycle={"suspend": True}))
        status = _wait_phase(cluster, namespace, "suspended", {"Suspended"}, 60)
        job = json_of(cluster, "get", "job", status["jobName"], "-n", namespace)
        assert job["spec"]["suspend"] is True
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == env["FTO_TRAINER_IMAGE"]
        # Resuming patches the Job; the trainer runs to the end.
        cluster.kubectl(
            [
                "patch",
                "finetunejob",
                "suspended",
                "-n",
                namespace,
                "--type",
                "merge",
                "-p",
                json.dumps({"spec": {"lifecycle": {"suspend": False}}}),
            ]
        )
        wait_for(
            lambda: (
                json_of(cluster, "get", "job", status["jobName"], "-n", namespace)["spec"][
                    "suspend"
                ]
                is False
            ),
            timeout=60,
            message="the Job to be resumed",
        )
        final = _wait_phase(cluster, namespace, "suspended", {"Succeeded", "Failed"}, 300)
    api_client.close()
    assert final["phase"] == "Succeeded", final
    events = json_of(
        cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=suspended",
    )["items"]
    assert {"Suspended", "Succeeded"} <= {e["reason"] for e in events}


# --- uninstall ----------------------------------------------------------------------------------


def test_uninstall_with_crds_keep_leaves_the_crd_and_finetunejobs(
    cluster: LocalCluster, localcluster_binaries: Binaries, namespace: str, tmp_path: Path
) -> None:
    values = merged(
        LOCAL_VALUES,
        {"watchNamespaces": [namespace], "operator": {"replicas": 0}, "crds": {"keep": True}},
    )
    release = Release(
        cluster, localcluster_binaries.helm, f"ftu-{_suffix()}", namespace, values, tmp_path
    )
    release.install()
    try:
        crd = json_of(cluster, "get", "crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        created = _create(cluster, _tiny_finetunejob("kept", namespace))
    finally:
        release.uninstall()
    # The release is gone...
    assert (
        cluster.kubectl(
            ["get", "deployment", release.fullname, "-n", namespace], check=False
        ).returncode
        != 0
    )
    assert (
        cluster.kubectl(["get", "role", release.fullname, "-n", namespace], check=False).returncode
        != 0
    )
    # ...the CRD and the FineTuneJob are not.
    time.sleep(1)  # give a (wrong) cascading deletion a moment to show
    crd_after = json_of(cluster, "get", "crd", CRD_NAME)
    assert crd_after["metadata"]["uid"] == crd["metadata"]["uid"]
    assert not crd_after["metadata"].get("deletionTimestamp")
    kept = _ftj(cluster, namespace, "kept")
    assert kept["metadata"]["uid"] == created["metadata"]["uid"]
    assert kept["spec"] == created["spec"]


# --- a platform that assigns user ids (OpenShift's restricted-v2) ---------------------------


def test_uid_null_lets_the_platform_assign_the_user(
    cluster: LocalCluster,
    localcluster_binaries: Binaries,
    kube: Any,
    namespace: str,
    make_pvc: Any,
    tiny_inputs: Path,
    tmp_path: Path,
) -> None:
    """With operator.uid and trainer.uid null, the chart installs, neither pod names a user,
    and the operator started from the installed Deployment's settings trains a FineTuneJob
    in a namespace that enforces the restricted profile."""
    values = merged(
        merged(LOCAL_VALUES, {"operator": {"replicas": 0, "uid": None}, "trainer": {"uid": None}}),
        _image_values(_trainer_image()),
    )
    release = Release(
        cluster, localcluster_binaries.helm, f"fto-{_suffix()}", namespace, values, tmp_path
    )
    release.install()
    try:
        deployment = json_of(cluster, "get", "deployment", release.fullname, "-n", namespace)
        pod_context = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod_context["runAsNonRoot"] is True
        assert not {"runAsUser", "runAsGroup"} & pod_context.keys(), pod_context
        env = {
            e["name"]: e.get("value", "")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["FTO_TRAINER_UID"] == ""
        config = OperatorConfig.from_env({k: v for k, v in env.items() if k.startswith("FTO_")})
        assert config.trainer_uid is None
        config = OperatorConfig(
            **{**config.__dict__, "namespaces": (namespace,), "liveness_endpoint": None}
        )
        _inputs_pvc(make_pvc, namespace, tiny_inputs)
        with EmbeddedOperator(kube, config):
            _create(cluster, _tiny_finetunejob("assigned", namespace))
            final = _wait_phase(cluster, namespace, "assigned", {"Succeeded", "Failed"}, 300)
        assert final["phase"] == "Succeeded", final
        job = json_of(cluster, "get", "job", final["jobName"], "-n", namespace)
        trainer_context = job["spec"]["template"]["spec"]["securityContext"]
        assert trainer_context["runAsNonRoot"] is True
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & trainer_context.keys()
    finally:
        release.uninstall()
