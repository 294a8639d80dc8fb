"""Least privilege and restricted Pod Security, for the operator pod the chart renders and
for the trainer pod the operator builds with the chart's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.builders import build_job
from finetune_operator.builders.owner import Owner
from finetune_operator.config import OperatorConfig

from .helm import REPO, container_env, of_kind, only, render
from .operator_api_calls import required_rules, role_rules
from .pod_security import restricted_violations

GPU_VALUES: dict[str, Any] = {
    "watchNamespaces": ["ml"],
    "trainer": {
        "uid": 1001,
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        ],
    },
}


def _all_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for kind in ("ClusterRole", "Role")
        for r in of_kind(objects, kind)
        for rule in r["rules"]
    ]


@pytest.mark.parametrize("values", [None, {"watchNamespaces": ["a", "b"]}], ids=["cluster", "ns"])
def test_the_role_is_exactly_what_the_operator_calls(helm: Path, values: Any) -> None:
    objects = render(helm, values)
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    assert roles
    for role in roles:
        assert role_rules(role) == required_rules()


@pytest.mark.parametrize("values", [None, {"watchNamespaces": ["a"]}], ids=["cluster", "ns"])
def test_no_wildcards_no_secrets_no_exec(helm: Path, values: Any) -> None:
    for rule in _all_rules(render(helm, values)):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/log"} & set(
            rule["resources"]
        ), rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        # No privilege escalation through RBAC objects or impersonation.
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_the_operator_pod_is_restricted(helm: Path) -> None:
    pod = only(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 65532
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in mounts


def _trainer_job(helm: Path, values: dict[str, Any]) -> dict[str, Any]:
    """The Job the operator builds for the example FineTuneJob, with the chart's settings."""
    env = container_env(only(render(helm, values), "Deployment"))
    config = OperatorConfig.from_env(env)
    example = yaml.safe_load((REPO / "examples" / "finetunejob.yaml").read_text())
    spec = FineTuneJobSpec.model_validate(example["spec"])
    owner = Owner(name=example["metadata"]["name"], namespace="ml", uid="0c1d2e3f")
    return build_job(spec, owner, config)


def test_the_trainer_pod_is_restricted_and_carries_the_chart_defaults(helm: Path) -> None:
    job = _trainer_job(helm, GPU_VALUES)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 1001
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert GPU_VALUES["trainer"]["tolerations"][0] in pod["tolerations"]
    assert pod["containers"][0]["image"] == "ghcr.io/finetune-operator/trainer:0.1.0"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/scratch"} <= mounts


def test_the_chart_sets_every_operator_setting() -> None:
    """Each FTO_* variable config.py reads is a chart value ."""
    import re

    from finetune_operator import config as config_module

    source = Path(config_module.__file__).read_text()
    read = {f"FTO_{name}" for name in re.findall(r'get\("([A-Z0-9_]+)"', source)}
    deployment_env = REPO / "charts" / "finetune-operator" / "templates" / "deployment.yaml"
    set_by_chart = set(re.findall(r"name: (FTO_[A-Z0-9_]+)", deployment_env.read_text()))
    assert read <= set_by_chart
    # And nothing the chart passes goes unread.
    assert set_by_chart <= read


def test_tolerations_travel_as_json(helm: Path) -> None:
    env = container_env(only(render(helm, GPU_VALUES), "Deployment"))
    assert json.loads(env["FTO_DEFAULT_TOLERATIONS"]) == GPU_VALUES["trainer"]["tolerations"]


def test_allowed_lists_travel_comma_separated(helm: Path) -> None:
    values = {"trainer": {"allowedImages": ["r.example/ml/", "ghcr.io/o/t"]}}
    env = container_env(only(render(helm, values), "Deployment"))
    assert env["FTO_ALLOWED_IMAGES"] == "r.example/ml/,ghcr.io/o/t"
    assert env["FTO_ALLOWED_SERVICE_ACCOUNTS"] == ""


def test_trainer_pods_default_to_the_charts_trainer_account(helm: Path) -> None:
    job = _trainer_job(helm, GPU_VALUES)  # watchNamespaces set: the account exists there
    assert job["spec"]["template"]["spec"].get("serviceAccountName") == "finetune-trainer"
    cluster_wide = _trainer_job(helm, {"trainer": GPU_VALUES["trainer"]})
    assert "serviceAccountName" not in cluster_wide["spec"]["template"]["spec"]


def test_uid_null_leaves_the_user_to_the_platform(helm: Path) -> None:
    """OpenShift's restricted-v2 assigns each namespace's pods a user id from its range and
    refuses one set outside it: null sets none, on the operator pod and on trainer pods."""
    values = {"operator": {"uid": None}, "trainer": {"uid": None}}
    pod = only(render(helm, values), "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod, platform_assigns_user=True) == []
    assert not {"runAsUser", "runAsGroup"} & pod["securityContext"].keys()
    trainer = _trainer_job(helm, values)["spec"]["template"]["spec"]
    assert restricted_violations(trainer, platform_assigns_user=True) == []
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & trainer["securityContext"].keys()
    # Without the platform's user, the project's rule still asks for a numeric one.
    assert restricted_violations(trainer) != []


def test_a_uid_from_an_openshift_range_renders_as_a_whole_number(helm: Path) -> None:
    """Helm reads a number from values as a float: ten digits must not become 1.00066e+09."""
    values = {"operator": {"uid": 1000660000}, "trainer": {"uid": 1000660001}}
    pod = only(render(helm, values), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000660000
    trainer = _trainer_job(helm, values)["spec"]["template"]["spec"]
    assert trainer["securityContext"]["runAsUser"] == 1000660001


def test_trainer_json_logs_reach_the_trainer_pod_only_when_asked(helm: Path) -> None:
    def env_of(values: dict[str, Any]) -> dict[str, str]:
        container = _trainer_job(helm, values)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    assert "FTO_LOG_FORMAT" not in env_of(GPU_VALUES)  # Jobs of plain-logging clusters as before
    json_values = {**GPU_VALUES, "trainer": {**GPU_VALUES["trainer"], "logFormat": "json"}}
    assert env_of(json_values)["FTO_LOG_FORMAT"] == "json"
