"""The chart's ValidatingAdmissionPolicies on the real API server: a FineTuneJob may name
only what its creator may read and what the cluster's policy allows, and the operator's own
token can create nothing but trainer Jobs outside the system namespaces."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import yaml

from finetune_api.spec import FineTuneJobSpec
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.waiting import wait_for
from finetune_operator.builders import Owner, build_job
from finetune_operator.config import OperatorConfig

from .helm import REPO, container_env, of_kind, render

pytestmark = pytest.mark.e2e

RELEASE, RELEASE_NAMESPACE = "vap", "vap-system"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-finetune-operator"
TENANT = "alice"
DIGEST = "sha256:" + "a" * 64
S3 = {"uri": "s3://bucket/runs"}


def _values(namespace: str, **trainer: Any) -> dict[str, Any]:
    return {
        "admissionPolicy": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        },
        "trainer": {
            "allowedImages": ["registry.example/ml/", "ghcr.io/org/trainer", "r/pinned:1.0"],
            "allowedServiceAccounts": ["trainer"],
            "allowedPriorityClasses": ["batch-low"],
            **trainer,
        },
    }


@pytest.fixture(scope="module")
def crd(cluster: LocalCluster) -> None:
    crd = REPO / "crds" / "finetunejobs.yaml"
    cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(crd)])
    cluster.kubectl(
        ["wait", "--for=condition=Established", "--timeout=60s", "crd/finetunejobs.finetune.dev"]
    )


@contextlib.contextmanager
def _installed(
    cluster: LocalCluster, helm: Any, values: dict[str, Any]
) -> Iterator[list[dict[str, Any]]]:
    objects = render(helm, values, release=RELEASE, namespace=RELEASE_NAMESPACE)
    chosen = of_kind(objects, "ValidatingAdmissionPolicy") + of_kind(
        objects, "ValidatingAdmissionPolicyBinding"
    )
    assert len(chosen) == 6
    text = yaml.safe_dump_all(chosen)
    cluster.kubectl(["apply", "-f", "-"], input=text)
    try:
        yield chosen
    finally:
        cluster.kubectl(["delete", "--ignore-not-found", "-f", "-"], input=text)


@pytest.fixture
def policies(
    cluster: LocalCluster, helm: Any, namespace: str, crd: None
) -> Iterator[list[dict[str, Any]]]:
    """The chart's policies and bindings, installed for this test's namespace."""
    with _installed(cluster, helm, _values(namespace)) as chosen:
        yield chosen


@pytest.fixture
def tenant(cluster: LocalCluster, namespace: str) -> str:
    """alice may create FineTuneJobs, and get only the objects named readable-* (and the
    ServiceAccount "trainer"); db-password and the rest exist but are not hers to read."""
    for kind, name in (("secret", "db-password"), ("secret", "readable-s3")):
        cluster.kubectl(["create", kind, "generic", name, "-n", namespace, "--from-literal=k=v"])
    cluster.kubectl(["create", "configmap", "private-chats", "-n", namespace])
    cluster.kubectl(["create", "configmap", "readable-chats", "-n", namespace])
    cluster.kubectl(["create", "serviceaccount", "trainer", "-n", namespace])
    cluster.kubectl(["create", "serviceaccount", "admin-bot", "-n", namespace])
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "tenant", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["finetune.dev"],
                "resources": ["finetunejobs"],
                "verbs": ["create", "get", "list"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["readable-s3"],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["readable-chats"],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["persistentvolumeclaims"],
                "resourceNames": ["readable-claim"],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts"],
                "resourceNames": ["trainer", "admin-bot"],
                "verbs": ["get"],
            },
        ],
    }
    cluster.kubectl(["apply", "-f", "-"], input=json.dumps(role))
    cluster.kubectl(
        ["create", "rolebinding", "tenant", "-n", namespace, "--role=tenant", f"--user={TENANT}"]
    )
    return TENANT


def _create(
    cluster: LocalCluster, namespace: str, spec: dict[str, Any], *, user: str = TENANT
) -> subprocess.CompletedProcess[str]:
    manifest = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {"output": {"s3": S3}, **spec},
    }
    return cluster.kubectl(
        ["create", "--dry-run=server", f"--as={user}", "-f", "-"],
        input=json.dumps(manifest),
        check=False,
    )


def _refused(cluster: LocalCluster, namespace: str, spec: dict[str, Any]) -> str:
    result = _create(cluster, namespace, spec)
    assert result.returncode != 0, f"admitted: {spec}"
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    return result.stderr


def _admitted(cluster: LocalCluster, namespace: str, spec: dict[str, Any]) -> None:
    result = _create(cluster, namespace, spec)
    assert result.returncode == 0, result.stderr


def _in_force(cluster: LocalCluster, namespace: str) -> None:
    """Policies take a moment to reach the API server's admission chain."""
    wildcard = {"scheduling": {"tolerations": [{"operator": "Exists"}]}}
    wait_for(
        lambda: _create(cluster, namespace, wildcard).returncode != 0,
        timeout=30,
        interval=0.5,
        message="the admission policy to be in force",
    )


def test_a_finetunejob_names_only_what_its_creator_may_read(
    cluster: LocalCluster, namespace: str, policies: Any, tenant: str
) -> None:
    _in_force(cluster, namespace)
    readable = {"output": {"s3": {**S3, "credentialsSecretRef": {"name": "readable-s3"}}}}
    _admitted(cluster, namespace, readable)
    # The trainer would read db-password for alice, who may not read it herself.
    stolen = {"output": {"s3": {**S3, "credentialsSecretRef": {"name": "db-password"}}}}
    message = _refused(cluster, namespace, stolen)
    assert (
        "spec.output.s3.credentialsSecretRef.name: you may not get Secret db-password in "
        f"namespace {namespace}" in message
    )
    token = {"model": {"name": "org/m", "tokenSecretRef": {"name": "db-password", "key": "k"}}}
    assert "db-password" in _refused(cluster, namespace, token)
    assert "db-password" in _refused(cluster, namespace, {"imagePullSecrets": ["db-password"]})
    chats = {"dataset": {"configMap": {"name": "private-chats", "key": "train.jsonl"}}}
    assert "you may not get ConfigMap private-chats" in _refused(cluster, namespace, chats)
    chats["dataset"]["configMap"]["name"] = "readable-chats"
    _admitted(cluster, namespace, chats)
    claim = {"dataset": {"pvc": {"claimName": "someone-elses", "path": "d.jsonl"}}}
    assert "may not get PersistentVolumeClaim someone-elses" in _refused(cluster, namespace, claim)
    held_out = {"dataset": {"eval": {"pvc": {"claimName": "someone-elses", "path": "e.jsonl"}}}}
    assert (
        "spec.dataset.eval.pvc.claimName: you may not get PersistentVolumeClaim someone-elses"
        in _refused(cluster, namespace, held_out)
    )
    eval_chats = {"configMap": {"name": "private-chats", "key": "eval.jsonl"}}
    assert (
        "spec.dataset.eval.configMap.name: you may not get ConfigMap private-chats in "
        f"namespace {namespace}" in _refused(cluster, namespace, {"dataset": {"eval": eval_chats}})
    )
    eval_chats["configMap"]["name"] = "readable-chats"
    _admitted(cluster, namespace, {"dataset": {"eval": eval_chats}})
    eval_s3 = {"s3": {**S3, "credentialsSecretRef": {"name": "db-password"}}}
    assert (
        "spec.dataset.eval.s3.credentialsSecretRef.name: you may not get Secret db-password in "
        f"namespace {namespace}" in _refused(cluster, namespace, {"dataset": {"eval": eval_s3}})
    )
    eval_s3["s3"]["credentialsSecretRef"]["name"] = "readable-s3"
    _admitted(cluster, namespace, {"dataset": {"eval": eval_s3}})
    account = {"serviceAccountName": "default"}
    assert "may not get ServiceAccount default" in _refused(cluster, namespace, account)


def test_the_clusters_policy_holds_at_admission(
    cluster: LocalCluster, namespace: str, policies: Any, tenant: str
) -> None:
    _in_force(cluster, namespace)
    for endpoint in (
        "http://169.254.169.254/latest",
        "http://2852039166",
        "http://[::ffff:169.254.169.254]",
        "http://[fd00:ec2::254]",
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "https://kubernetes.default.svc",
        "http://metadata.google.internal.",
        "http://100.100.100.200",  # Alibaba Cloud's metadata service
        "http://192.0.0.192",
        "http://[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::7f00:1]:9000",  # NAT64 of 127.0.0.1
        "http://[::a9fe:a9fe]",  # IPv4-compatible
        "http://[::ffff:0:a9fe:a9fe]",  # IPv4-translated
        "http://[::ffff:169.254.1.1]",
        "http://evil.com!.minio.svc",  # no DNS name
    ):
        message = _refused(cluster, namespace, {"output": {"s3": {**S3, "endpoint": endpoint}}})
        assert f"S3 endpoint {endpoint} is not allowed" in message
    for endpoint in ("http://169.254.169.254/latest", "http://127.0.0.1:9000"):
        held_out = {"dataset": {"eval": {"s3": {**S3, "endpoint": endpoint}}}}
        assert f"S3 endpoint {endpoint} is not allowed" in _refused(cluster, namespace, held_out)
    _admitted(
        cluster,
        namespace,
        {"dataset": {"eval": {"s3": {**S3, "endpoint": "https://minio.example"}}}},
    )
    # A backslash ends the host for some URL parsers (urllib3 reads evil.com); the API
    # server's does not take it in a host at all.
    message = _refused(
        cluster, namespace, {"output": {"s3": {**S3, "endpoint": "http://evil.com\\.minio.svc"}}}
    )
    assert "S3 endpoint http://evil.com\\.minio.svc is not allowed" in message
    for endpoint in (
        "https://minio.example",
        "http://minio_1.minio.svc:9000",
        "http://[64:ff9b::a00:5]",  # NAT64 of 10.0.0.5
        "http://[2001:db8::5]:9000",
        "http://100.100.100.201",
    ):
        _admitted(cluster, namespace, {"output": {"s3": {**S3, "endpoint": endpoint}}})

    assert "system-node-critical is not allowed" in _refused(
        cluster, namespace, {"scheduling": {"priorityClassName": "system-node-critical"}}
    )
    _admitted(cluster, namespace, {"scheduling": {"priorityClassName": "batch-low"}})
    assert "a toleration without a key" in _refused(
        cluster, namespace, {"scheduling": {"tolerations": [{"operator": "Exists"}]}}
    )
    _admitted(
        cluster, namespace, {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}
    )
    for key in (
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
        "node.kubernetes.io/unschedulable",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "CriticalAddonsOnly",
        "ToBeDeletedByClusterAutoscaler",
    ):
        toleration = {"key": key, "operator": "Exists"}
        message = _refused(cluster, namespace, {"scheduling": {"tolerations": [toleration]}})
        assert f"spec.scheduling.tolerations: {key} is a taint Kubernetes reserves" in message
        assert "trainer.allowedTolerationKeys" in message
    # Kubernetes' own form of not-ready and unreachable passes; any other does not.
    delayed = [
        {"key": f"node.kubernetes.io/{condition}", "operator": "Exists", "effect": "NoExecute"}
        for condition in ("not-ready", "unreachable")
    ]
    assert "node.kubernetes.io/not-ready (and 1 more) is a taint" in _refused(
        cluster, namespace, {"scheduling": {"tolerations": delayed}}
    )
    for toleration in delayed:
        toleration["tolerationSeconds"] = 60
    _admitted(cluster, namespace, {"scheduling": {"tolerations": delayed}})
    scheduled = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    assert "node.kubernetes.io/not-ready is a taint" in _refused(
        cluster, namespace, {"scheduling": {"tolerations": [scheduled]}}
    )

    for image in (
        "registry.example/mlx/trainer:1",  # looks like the allowed prefix, is not below it
        "registry:5000/evil:1",  # a port is not a tag
        f"r/pinned:1.0@{DIGEST}",  # a tag entry does not admit any digest
        "r/pinned:2.0",
        "ghcr.io/org/trainer-evil:1",
    ):
        assert f"spec.image: {image} is not allowed" in _refused(
            cluster, namespace, {"image": image}
        )
    for image in (
        "registry.example/ml/team/trainer:3",
        f"ghcr.io/org/trainer@{DIGEST}",
        "r/pinned:1.0",
        "ghcr.io/finetune-operator/trainer:0.1.0",  # the chart's default trainer image
    ):
        _admitted(cluster, namespace, {"image": image})

    assert "admin-bot is not allowed" in _refused(
        cluster, namespace, {"serviceAccountName": "admin-bot"}
    )
    _admitted(cluster, namespace, {"serviceAccountName": "trainer"})


def test_the_clusters_lists_hold_at_admission(
    cluster: LocalCluster, helm: Any, namespace: str, crd: None, tenant: str
) -> None:
    values = _values(
        namespace,
        allowedS3Endpoints=["*.minio.svc"],
        allowedTolerationKeys=["CriticalAddonsOnly", "node.kubernetes.io/not-ready"],
    )
    # The operator applies the same lists (policy.py) from its environment.
    (deployment,) = of_kind(
        render(helm, values, release=RELEASE, namespace=RELEASE_NAMESPACE), "Deployment"
    )
    env = container_env(deployment)
    assert env["FTO_ALLOWED_S3_ENDPOINTS"] == "*.minio.svc"
    assert env["FTO_ALLOWED_TOLERATION_KEYS"] == "CriticalAddonsOnly,node.kubernetes.io/not-ready"
    with _installed(cluster, helm, values):
        _in_force(cluster, namespace)
        _admitted(cluster, namespace, {"output": {"s3": {**S3, "endpoint": "http://s3.minio.svc"}}})
        # Hosts that end in the allowed suffix only for a parser that reads past the name.
        for endpoint in ("http://evil.com!.minio.svc", "http://evil.com\\.minio.svc"):
            message = _refused(cluster, namespace, {"output": {"s3": {**S3, "endpoint": endpoint}}})
            assert f"S3 endpoint {endpoint} is not allowed" in message
        for key in ("CriticalAddonsOnly", "node.kubernetes.io/not-ready"):
            listed = {"scheduling": {"tolerations": [{"key": key, "operator": "Exists"}]}}
            _admitted(cluster, namespace, listed)
        unlisted = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}
        assert "node.kubernetes.io/unschedulable is a taint" in _refused(
            cluster, namespace, {"scheduling": {"tolerations": [unlisted]}}
        )


def _job_as_operator(
    cluster: LocalCluster, job: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        ["create", "--dry-run=server", f"--as={OPERATOR_USER}", "-f", "-"],
        input=json.dumps(job),
        check=False,
    )


def test_the_operators_token_creates_only_trainer_jobs(
    cluster: LocalCluster, namespace: str, policies: Any
) -> None:
    # The operator's ClusterRole lets it create Jobs anywhere, kube-system included.
    grant = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "vap-jobs"},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "vap-jobs"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "vap-jobs",
            },
            "subjects": [{"kind": "User", "name": OPERATOR_USER}],
        },
    ]
    text = yaml.safe_dump_all(grant)
    cluster.kubectl(["apply", "-f", "-"], input=text)
    try:
        owner = Owner(name="run", namespace=namespace, uid="0f0e0d0c-0000-4000-8000-000000000001")
        spec = FineTuneJobSpec.model_validate({"output": {"s3": S3}})
        config = OperatorConfig(trainer_image="ghcr.io/finetune-operator/trainer:0.1.0")
        # Admission cannot see whether the owner exists (dry runs reach no garbage collector).
        trainer_job = build_job(spec, owner, config)
        wait_for(
            lambda: _job_as_operator(cluster, _in(trainer_job, "kube-system")).returncode != 0,
            timeout=30,
            interval=0.5,
            message="the operator Job policy to be in force",
        )
        result = _job_as_operator(cluster, trainer_job)
        assert result.returncode == 0, result.stderr
        refused = _job_as_operator(cluster, _in(trainer_job, "kube-system"))
        assert "the operator creates no Job in a system namespace" in refused.stderr

        shell = json.loads(json.dumps(trainer_job))
        shell["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "id"]
        assert "run the trainer" in _job_as_operator(cluster, shell).stderr
        token = json.loads(json.dumps(trainer_job))
        token["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
        assert "without an API token" in _job_as_operator(cluster, token).stderr
        host = json.loads(json.dumps(trainer_job))
        host["spec"]["template"]["spec"]["volumes"].append(
            {"name": "root", "hostPath": {"path": "/"}}
        )
        assert "mount only ConfigMaps" in _job_as_operator(cluster, host).stderr
        image = json.loads(json.dumps(trainer_job))
        image["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/miner:1"
        assert (
            "trainer image evil/miner:1 is not allowed" in _job_as_operator(cluster, image).stderr
        )

        def refused_as_operator(change: Callable[[dict[str, Any]], object], why: str) -> None:
            job = json.loads(json.dumps(trainer_job))
            change(job)
            result = _job_as_operator(cluster, job)
            assert result.returncode != 0, f"admitted: {job}"
            assert why in result.stderr, result.stderr

        def pod(job: dict[str, Any]) -> dict[str, Any]:
            return cast(dict[str, Any], job["spec"]["template"]["spec"])

        def context(job: dict[str, Any]) -> dict[str, Any]:
            return cast(dict[str, Any], pod(job)["containers"][0]["securityContext"])

        unowned = "the operator creates only Jobs that a FineTuneJob controls"
        refused_as_operator(lambda job: job["metadata"].pop("ownerReferences"), unowned)
        refused_as_operator(
            lambda job: job["metadata"]["ownerReferences"][0].update(controller=False), unowned
        )
        refused_as_operator(
            lambda job: job["metadata"]["ownerReferences"][0].update(
                apiVersion="apps/v1", kind="Deployment"
            ),
            unowned,
        )
        refused_as_operator(
            lambda job: job["metadata"]["ownerReferences"][0].update(apiVersion="evil.dev/v1"),
            unowned,
        )
        placed = "that the scheduler places (no spec.nodeName)"
        refused_as_operator(lambda job: pod(job).update(nodeName="control-plane-1"), placed)
        refused_as_operator(lambda job: pod(job)["securityContext"].update(runAsUser=0), placed)
        refused_as_operator(
            lambda job: pod(job)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
            placed,
        )
        for change in (
            {"seLinuxOptions": {"type": "spc_t"}},
            {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}]},
        ):
            refused_as_operator(
                lambda job, change=change: pod(job)["securityContext"].update(change), placed
            )
        refused_as_operator(lambda job: pod(job).update(runtimeClassName="unsandboxed"), placed)
        container = "container trainer does not"
        for change in (
            {"runAsNonRoot": False},
            {"runAsUser": 0},
            {"seccompProfile": {"type": "Unconfined"}},
            {"appArmorProfile": {"type": "Unconfined"}},
            {"seLinuxOptions": {"type": "spc_t"}},
        ):
            refused_as_operator(lambda job, change=change: context(job).update(change), container)

        def unmasked(job: dict[str, Any]) -> None:
            pod(job)["hostUsers"] = False  # the API server takes Unmasked only with it
            context(job)["procMount"] = "Unmasked"

        refused_as_operator(unmasked, container)
        # Already refused for the trainer container by the older check.
        refused_as_operator(
            lambda job: context(job).pop("allowPrivilegeEscalation"),
            "without an API token, host namespaces or privileges",
        )
        for change in (
            {"privileged": True, "allowPrivilegeEscalation": True},
            {"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}},
        ):
            refused_as_operator(
                lambda job, change=change: context(job).update(change),
                "without an API token, host namespaces or privileges",
            )
        refused_as_operator(
            lambda job: pod(job)["containers"][0]["ports"][0].update(hostPort=9400), container
        )
        refused_as_operator(
            lambda job: pod(job)["containers"][0].update(securityContext={}),
            "without an API token, host namespaces or privileges",
        )
        # An init container (refused as such, and for its privileges, whichever reports).
        init = {"name": "setup", "image": "ghcr.io/finetune-operator/trainer:0.1.0"}
        refused_as_operator(
            lambda job: pod(job).update(initContainers=[{**init, "securityContext": {}}]),
            "run the trainer",
        )
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            refused_as_operator(
                lambda job, flag=flag: pod(job).update({flag: True}), "host namespaces"
            )

        # Anyone else's Jobs are not the operator policy's business.
        plain = cluster.kubectl(
            ["create", "--dry-run=server", "-f", "-"], input=json.dumps(shell), check=False
        )
        assert plain.returncode == 0, plain.stderr
    finally:
        cluster.kubectl(["delete", "--ignore-not-found", "-f", "-"], input=text)


def _pod_in(namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
    """A pod the scheduler never places (no node matches), restricted as the namespace asks."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {
            "nodeSelector": {"finetune.dev/no-such-node": "true"},
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": "registry.invalid/idle:1",
                    "securityContext": {
                        "runAsUser": 1000,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_the_operators_token_deletes_only_trainer_pods(
    cluster: LocalCluster, namespace: str, policies: Any
) -> None:
    """Cluster-wide the operator may delete pods anywhere (a stalled trainer restarted):
    the policy holds a stolen token to trainer pods outside the system namespaces."""
    grant = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "vap-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "vap-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "vap-pods",
            },
            "subjects": [{"kind": "User", "name": OPERATOR_USER}],
        },
    ]
    text = yaml.safe_dump_all(grant)
    cluster.kubectl(["apply", "-f", "-"], input=text)
    # A suspended Job (it makes no pod) for the trainer pod to name as its controller, so
    # the garbage collector leaves that pod alone.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "owner", "namespace": namespace},
        "spec": {
            "suspend": True,
            "template": {"spec": _pod_in(namespace, "ignored")["spec"]},
        },
    }
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    created = json.loads(
        cluster.kubectl(["create", "-o", "json", "-f", "-"], input=json.dumps(job)).stdout
    )
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "owner",
        "uid": created["metadata"]["uid"],
        "controller": True,
    }
    trainer = _pod_in(
        namespace,
        "trainer",
        labels={"app.kubernetes.io/managed-by": "finetune-operator"},
        ownerReferences=[owner],
    )
    unlabelled = _pod_in(namespace, "unlabelled", ownerReferences=[owner])
    bystander = _pod_in(namespace, "bystander")
    for pod in (trainer, unlabelled, bystander):
        cluster.kubectl(["create", "-f", "-"], input=json.dumps(pod))

    def delete_as_operator(name: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            ["delete", "pod", name, "-n", namespace, "--dry-run=server", f"--as={OPERATOR_USER}"],
            check=False,
        )

    try:
        wait_for(
            lambda: delete_as_operator("bystander").returncode != 0,
            timeout=30,
            interval=0.5,
            message="the operator pod-delete policy to be in force",
        )
        allowed = delete_as_operator("trainer")
        assert allowed.returncode == 0, allowed.stderr
        for name in ("bystander", "unlabelled"):
            refused = delete_as_operator(name)
            assert "the operator deletes only trainer pods" in refused.stderr, refused.stderr
        system = cluster.kubectl(
            [
                "delete",
                "pod",
                "no-such-pod",
                "-n",
                "kube-system",
                "--dry-run=server",
                f"--as={OPERATOR_USER}",
            ],
            check=False,
        )
        assert system.returncode != 0
        # Anyone else's deletions are not the operator policy's business.
        mine = cluster.kubectl(
            ["delete", "pod", "bystander", "-n", namespace, "--dry-run=server"], check=False
        )
        assert mine.returncode == 0, mine.stderr
    finally:
        cluster.kubectl(["delete", "--ignore-not-found", "-f", "-"], input=text)


def _in(job: dict[str, Any], namespace: str) -> dict[str, Any]:
    moved = json.loads(json.dumps(job))
    moved["metadata"]["namespace"] = namespace
    return moved


def _tracked(uri: str) -> dict[str, Any]:
    return {"training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": uri}}}


def test_the_tracking_uri_policy_holds_at_admission(
    cluster: LocalCluster, helm: Any, namespace: str, policies: Any, tenant: str
) -> None:
    _in_force(cluster, namespace)
    for uri in (
        "http://169.254.169.254/latest",
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "http://2852039166",
        "http://[fd00:ec2::254]",
        "http://metadata.google.internal",
        "https://kubernetes.default.svc",
        "http://mlflow:5000",
        "http://mlflow.mlflow:5000",
        "http://mlflow.mlflow.svc:5000",
        "http://mlflow.mlflow.svc.cluster.local.",
        "http://10.96.0.10:5000",
        "http://[fd12::1]",
    ):
        message = _refused(cluster, namespace, _tracked(uri))
        assert f"spec.training.mlflow.trackingUri: {uri} is not allowed" in message
        assert "trainer.allowedTrackingHosts" in message
    _admitted(cluster, namespace, _tracked("https://mlflow.example.com"))
    # The tracking Secrets are checked like every other Secret a FineTuneJob names.
    secret = {"name": "db-password", "tokenKey": "k"}
    spec = _tracked("https://mlflow.example.com")
    spec["training"]["mlflow"]["credentialsSecretRef"] = secret
    assert "may not get Secret db-password" in _refused(cluster, namespace, spec)
    secret["name"] = "readable-s3"
    _admitted(cluster, namespace, spec)


def test_the_tracking_host_list_holds_at_admission(
    cluster: LocalCluster, helm: Any, namespace: str, crd: None, tenant: str
) -> None:
    values = _values(namespace, allowedTrackingHosts=["mlflow.mlflow.svc:5000"])
    (deployment,) = of_kind(
        render(helm, values, release=RELEASE, namespace=RELEASE_NAMESPACE), "Deployment"
    )
    assert container_env(deployment)["FTO_ALLOWED_TRACKING_HOSTS"] == "mlflow.mlflow.svc:5000"
    with _installed(cluster, helm, values):
        _in_force(cluster, namespace)
        _admitted(cluster, namespace, _tracked("http://mlflow.mlflow.svc:5000"))
        message = _refused(cluster, namespace, _tracked("https://mlflow.example.com"))
        assert "allowed: mlflow.mlflow.svc:5000" in message
