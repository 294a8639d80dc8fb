"""`helm template` of the chart with default and non-default values: structural assertions
on what it renders."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from finetune_api import contract
from finetune_operator import config as operator_config
from finetune_operator.naming import child_labels

from .helm import CHART, REPO, container_env, of_kind, only, render

RELEASE_NS = "finetune-system"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _kinds(objects: list[dict]) -> list[tuple[str, str | None]]:
    return sorted((o["kind"], o["metadata"].get("namespace")) for o in objects)


def test_default_values_render_the_operator_cluster_wide(helm: Path) -> None:
    objects = render(helm)
    assert _kinds(objects) == sorted(
        [
            ("ClusterRole", None),
            ("ClusterRoleBinding", None),
            ("CustomResourceDefinition", None),
            ("Deployment", RELEASE_NS),
            ("NetworkPolicy", RELEASE_NS),  # the operator's
            ("NetworkPolicy", RELEASE_NS),  # the trainers'
            ("ServiceAccount", RELEASE_NS),  # the operator's
            ("ServiceAccount", RELEASE_NS),  # the trainers'
            # What FineTuneJobs may name, what the operator's token may create, and which
            # pods it may delete.
            ("ValidatingAdmissionPolicy", None),
            ("ValidatingAdmissionPolicy", None),
            ("ValidatingAdmissionPolicy", None),
            ("ValidatingAdmissionPolicyBinding", None),
            ("ValidatingAdmissionPolicyBinding", None),
            ("ValidatingAdmissionPolicyBinding", None),
        ]
    )
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = container_env(deployment)
    assert env["FTO_NAMESPACES"] == ""
    # A cluster-wide operator does not default trainers to an account that exists only in
    # the release namespace.
    assert env["FTO_TRAINER_SERVICE_ACCOUNT"] == ""
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == only(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fto-finetune-operator", "namespace": RELEASE_NS}
    ]


def test_the_crd_is_the_generated_one_and_kept_by_default(helm: Path) -> None:
    crd = only(render(helm), "CustomResourceDefinition")
    generated = yaml.safe_load((REPO / "crds" / "finetunejobs.yaml").read_text())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crd_keep_and_enabled_toggles(helm: Path) -> None:
    not_kept = only(render(helm, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in not_kept["metadata"]
    assert of_kind(render(helm, {"crds": {"enabled": False}}), "CustomResourceDefinition") == []


def test_namespaced_mode_uses_roles_in_each_watched_namespace(helm: Path) -> None:
    objects = render(helm, {"watchNamespaces": ["team-a", "team-b"]})
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    roles = of_kind(objects, "Role")
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "fto-finetune-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "fto-finetune-operator", "namespace": RELEASE_NS}
        ]
    env = container_env(only(objects, "Deployment"))
    assert env["FTO_NAMESPACES"] == "team-a,team-b"
    # The trainer account exists in every watched namespace, so it becomes the default.
    trainer_accounts = [
        sa
        for sa in of_kind(objects, "ServiceAccount")
        if sa["metadata"]["name"] == "finetune-trainer"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in trainer_accounts) == ["team-a", "team-b"]
    assert env["FTO_TRAINER_SERVICE_ACCOUNT"] == "finetune-trainer"


def test_trainer_accounts_have_no_token_and_no_binding(helm: Path) -> None:
    objects = render(helm, {"watchNamespaces": ["team-a"]})
    for account in of_kind(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    bound = [s["name"] for b in of_kind(objects, "RoleBinding") for s in b["subjects"]]
    assert "finetune-trainer" not in bound


def test_images_by_tag_and_by_digest(helm: Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    deployment = only(render(helm), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/finetune-operator/operator:{app_version}"
    # The chart's default trainer image is the operator's own default.
    assert container_env(deployment)["FTO_TRAINER_IMAGE"] == operator_config.DEFAULT_TRAINER_IMAGE

    pinned = render(
        helm,
        {
            "image": {"registry": "registry.example.com", "digest": DIGEST, "tag": "ignored"},
            "trainer": {"image": {"repository": "ml/trainer", "digest": DIGEST}},
            "imagePullSecrets": [{"name": "regcred"}],
        },
    )
    pod = only(pinned, "Deployment")["spec"]["template"]["spec"]
    assert (
        pod["containers"][0]["image"] == f"registry.example.com/finetune-operator/operator@{DIGEST}"
    )
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container_env(only(pinned, "Deployment"))["FTO_TRAINER_IMAGE"] == (
        f"ghcr.io/ml/trainer@{DIGEST}"
    )


def test_operator_scheduling_and_extra_env(helm: Path) -> None:
    values = {
        "operator": {
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            },
                        }
                    ]
                }
            },
            "priorityClassName": "system-cluster-critical",
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            "podAnnotations": {"a": "b"},
        }
    }
    deployment = only(render(helm, values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == values["operator"]["tolerations"]
    assert pod["affinity"] == values["operator"]["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    # Helm merges maps: the default requests stay, the limits are the user's.
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert container_env(deployment)["HTTPS_PROXY"] == "http://proxy:3128"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}


def test_probes_hit_kopfs_health_endpoint(helm: Path) -> None:
    deployment = only(render(helm, {"operator": {"health": {"port": 9000}}}), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["finetune-operator"]
    assert container["ports"][0] == {"name": "health", "containerPort": 9000, "protocol": "TCP"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = container_env(deployment)
    assert env["FTO_LIVENESS_ENDPOINT"] == "http://0.0.0.0:9000/healthz"
    config = operator_config.OperatorConfig.from_env(env)
    assert config.liveness_endpoint == "http://0.0.0.0:9000/healthz"


def test_trainer_defaults_reach_the_operator_config(helm: Path) -> None:
    values = {
        "operator": {"logLevel": "DEBUG", "logFormat": "plain", "progressPollSeconds": 2.5},
        "trainer": {
            "uid": 2000,
            "terminationGracePeriodSeconds": 60,
            "image": {"pullPolicy": "Always"},
            "nodeSelector": {"nvidia.com/gpu.present": "true", "pool": "h200"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
            ],
        },
    }
    env = container_env(only(render(helm, values), "Deployment"))
    config = operator_config.OperatorConfig.from_env(env)
    assert config.default_node_selector == {"nvidia.com/gpu.present": "true", "pool": "h200"}
    assert list(config.default_tolerations) == values["trainer"]["tolerations"]
    assert config.trainer_uid == 2000
    assert config.trainer_grace_period_seconds == 60
    assert config.trainer_image_pull_policy == "Always"
    assert config.progress_poll_seconds == 2.5
    assert (config.log_level, config.log_format) == ("DEBUG", "plain")


def test_network_policies_are_on_by_default_and_match_the_pods(helm: Path) -> None:
    assert of_kind(render(helm, {"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []
    objects = render(
        helm,
        {
            "watchNamespaces": ["team-a"],
            "networkPolicy": {
                "enabled": True,
                "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
                "prometheus": {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},
            },
        },
    )
    operator_policy = only(objects, "NetworkPolicy", "fto-finetune-operator")
    deployment = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = operator_policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    api_rule, trainer_rule = operator_policy["spec"]["egress"]
    assert api_rule == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    trainer_pod_labels = child_labels("ftj", "uid")
    assert trainer_rule["to"][0]["podSelector"]["matchLabels"].items() <= trainer_pod_labels.items()
    assert trainer_rule["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]
    assert trainer_rule["ports"] == [{"port": contract.METRICS_PORT, "protocol": "TCP"}]

    trainer_policy = only(objects, "NetworkPolicy", "fto-finetune-operator-trainer")
    assert trainer_policy["metadata"]["namespace"] == "team-a"
    assert trainer_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # Trainers reach the cluster's pods and everything else but link-local addresses,
    # where cloud metadata services hand out the node's credentials.
    in_cluster, v4, v6 = trainer_policy["spec"]["egress"][0]["to"] + [
        peer for rule in trainer_policy["spec"]["egress"][1:] for peer in rule["to"]
    ]
    assert in_cluster == {"namespaceSelector": {}}
    assert v4["ipBlock"] == {
        "cidr": "0.0.0.0/0",
        "except": ["169.254.0.0/16", "100.100.100.200/32", "192.0.0.192/32"],
    }
    assert v6["ipBlock"] == {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}
    assert (
        trainer_policy["spec"]["podSelector"]["matchLabels"].items() <= trainer_pod_labels.items()
    )
    (ingress,) = trainer_policy["spec"]["ingress"]
    from_operator, from_prometheus = ingress["from"]
    assert from_operator["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert from_operator["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": RELEASE_NS
    }
    assert from_prometheus["namespaceSelector"] == {"matchLabels": {"name": "monitoring"}}
    assert ingress["ports"] == [{"port": contract.METRICS_PORT, "protocol": "TCP"}]
    # The operator's own metrics port is open to the same Prometheus, and only to it.
    probes, metrics = operator_policy["spec"]["ingress"]
    assert probes == {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"][0]["namespaceSelector"] == {"matchLabels": {"name": "monitoring"}}


def test_operator_metrics_port_and_pod_monitor(helm: Path) -> None:
    deployment = only(render(helm), "Deployment")
    env = container_env(deployment)
    config = operator_config.OperatorConfig.from_env(env)
    assert config.metrics_port == 8081
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in ports
    monitor = only(
        render(helm, {"metrics": {"operator": {"podMonitor": {"enabled": True}}}}), "PodMonitor"
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    off = render(helm, {"metrics": {"operator": {"port": 0, "podMonitor": {"enabled": True}}}})
    assert of_kind(off, "PodMonitor") == []
    off_ports = only(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in off_ports] == ["health"]
    assert (
        operator_config.OperatorConfig.from_env(container_env(only(off, "Deployment"))).metrics_port
        == 0
    )


def test_trainer_pod_monitor_toggle(helm: Path) -> None:
    assert of_kind(render(helm), "PodMonitor") == []
    monitor = only(
        render(
            helm,
            {
                "metrics": {
                    "trainer": {"podMonitor": {"enabled": True, "labels": {"release": "prom"}}}
                }
            },
        ),
        "PodMonitor",
    )
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= child_labels("a", "b").items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == contract.METRICS_PORT_NAME
    assert endpoint["path"] == contract.METRICS_PATH


def test_replicas_zero_pauses_the_operator(helm: Path) -> None:
    assert only(render(helm, {"operator": {"replicas": 0}}), "Deployment")["spec"]["replicas"] == 0


def test_chart_app_version_is_the_project_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"]
    assert operator_config.DEFAULT_TRAINER_IMAGE.endswith(f":{project['version']}")


def test_default_tolerations_env_is_json(helm: Path) -> None:
    env = container_env(only(render(helm), "Deployment"))
    assert json.loads(env["FTO_DEFAULT_TOLERATIONS"]) == []
    assert env["FTO_DEFAULT_NODE_SELECTOR"] == ""
