"""Which images and ServiceAccounts a FineTuneJob may choose when the operator narrows them."""

from __future__ import annotations

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.config import OperatorConfig
from finetune_operator.policy import image_allowed, policy_problems, split_image

from .conftest import spec_of

ALLOWED = ("registry.example/ml/", "ghcr.io/org/trainer")


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/ml/trainer:1",
        "registry.example/ml/team/trainer@sha256:" + "a" * 64,
        "ghcr.io/org/trainer",
        "ghcr.io/org/trainer:2.0",
        "ghcr.io/org/trainer@sha256:" + "b" * 64,
    ],
)
def test_allowed_images(image: str) -> None:
    assert image_allowed(image, ALLOWED)


@pytest.mark.parametrize(
    "image",
    ["registry.example/mlx/trainer:1", "ghcr.io/org/trainer-evil:1", "ghcr.io/org/trainer/x:1"],
)
def test_images_that_only_look_allowed(image: str) -> None:
    assert not image_allowed(image, ALLOWED)


def spec(**parts: object) -> FineTuneJobSpec:
    return spec_of(parts)


def test_empty_lists_allow_anything() -> None:
    assert policy_problems(spec(image="any/img:1", serviceAccountName="x"), OperatorConfig()) == []


def test_operator_defaults_are_always_allowed() -> None:
    config = OperatorConfig(
        trainer_image="r/trainer:1",
        trainer_service_account="trainer",
        allowed_images=("other/",),
        allowed_service_accounts=("other",),
    )
    assert policy_problems(spec(image="r/trainer:1", serviceAccountName="trainer"), config) == []


def test_each_refusal_names_the_field_and_the_choices() -> None:
    config = OperatorConfig(allowed_images=ALLOWED, allowed_service_accounts=("trainer",))
    problems = policy_problems(spec(image="evil/img:1", serviceAccountName="admin"), config)
    assert problems == [
        "spec.image: evil/img:1 is not allowed in this cluster; leave it unset for the default "
        "trainer image or use one of: registry.example/ml/, ghcr.io/org/trainer",
        "spec.serviceAccountName: admin is not allowed in this cluster; leave it unset or use "
        "one of: trainer",
    ]


def test_the_lists_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"FTO_ALLOWED_IMAGES": " a/ , b/c ,", "FTO_ALLOWED_SERVICE_ACCOUNTS": "t1,t2"}
    )
    assert config.allowed_images == ("a/", "b/c")
    assert config.allowed_service_accounts == ("t1", "t2")


@pytest.mark.parametrize(
    "image, allowed",
    [
        # A registry's port is not a tag: an entry of a repository never admits another
        # registry that merely starts with its name.
        ("registry:5000/evil/img:1", ("registry",)),
        # A tag entry admits that tag, not that tag with any digest (the digest is pulled).
        ("r/trainer:1.0@sha256:" + "e" * 64, ("r/trainer:1.0",)),
        ("r/trainer:1.1", ("r/trainer:1.0",)),
        ("r/trainer@sha256:" + "e" * 64, ("r/trainer@sha256:" + "a" * 64,)),
    ],
)
def test_image_entries_admit_exactly_what_they_say(image: str, allowed: tuple[str, ...]) -> None:
    assert not image_allowed(image, allowed)


def test_exact_entries_admit_their_reference() -> None:
    digest = "r/trainer@sha256:" + "a" * 64
    assert image_allowed("r/trainer:1.0", ("r/trainer:1.0",))
    assert image_allowed(digest, (digest,))
    assert image_allowed("registry:5000/ml/trainer:2", ("registry:5000/ml/trainer",))
    assert split_image("registry:5000/ml/trainer") == ("registry:5000/ml/trainer", None, None)


def s3_output(endpoint: str) -> FineTuneJobSpec:
    return spec_of({"output": {"s3": {"uri": "s3://bucket/p", "endpoint": endpoint}}})


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]",
        "http://[fe80::1]:80",
        "http://127.0.0.1:9000",
        "http://127.1",
        "http://2852039166",  # 169.254.169.254 as one number
        "http://0xa9fea9fe",
        "http://0251.0376.0251.0376",
        "http://[::ffff:169.254.169.254]",
        "http://[::1]",
        "http://0.0.0.0:9000",
        "http://localhost:9000",
        "http://metadata.google.internal",
        "https://kubernetes.default.svc",
        "http://LOCALHOST.",
        "http://100.100.100.200",  # Alibaba Cloud's metadata service
        "http://1684301000",  # the same, as one number
        "http://192.0.0.192",  # Oracle Cloud Classic's
        "http://[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::169.254.169.254]",
        "http://[64:ff9b::7f00:1]:9000",  # NAT64 of 127.0.0.1
        "http://[::a9fe:a9fe]",  # IPv4-compatible
        "http://[::169.254.169.254]",
        "http://[::ffff:0:a9fe:a9fe]",  # IPv4-translated
        "http://[::ffff:169.254.1.1]",
        "http://[::ffff:a9fe:a9fe]",
        "http://evil.com\\.minio.svc",  # urllib3 reads the host as evil.com
        "http://evil.com!.minio.svc",
        "http://:9000",
    ],
)
def test_loopback_metadata_and_the_api_server_are_refused_by_default(endpoint: str) -> None:
    problems = policy_problems(s3_output(endpoint), OperatorConfig())
    assert len(problems) == 1 and problems[0].startswith(f"spec.output.s3.endpoint: {endpoint} ")


def test_the_eval_sets_s3_endpoint_is_held_to_the_same_policy() -> None:
    evaluation = {"s3": {"uri": "s3://bucket/e", "endpoint": "http://169.254.169.254/latest"}}
    spec = spec_of({"dataset": {"eval": evaluation}})
    problems = policy_problems(spec, OperatorConfig())
    assert len(problems) == 1
    assert problems[0].startswith("spec.dataset.eval.s3.endpoint: http://169.254.169.254/latest ")
    listed = OperatorConfig(allowed_s3_endpoints=("minio.example",))
    evaluation["s3"]["endpoint"] = "https://minio.example"
    assert policy_problems(spec_of({"dataset": {"eval": evaluation}}), listed) == []
    evaluation["s3"]["endpoint"] = "https://other.example"
    problems = policy_problems(spec_of({"dataset": {"eval": evaluation}}), listed)
    assert len(problems) == 1 and problems[0].startswith("spec.dataset.eval.s3.endpoint: ")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://minio.example:9000",
        "http://10.0.0.5:9000",
        "http://minio.minio.svc",
        "http://minio_1.minio.svc",
        "http://[2001:db8::5]:9000",
        "http://[64:ff9b::a00:5]",  # NAT64 of 10.0.0.5
        "http://100.100.100.201",
    ],
)
def test_other_endpoints_pass_by_default(endpoint: str) -> None:
    assert policy_problems(s3_output(endpoint), OperatorConfig()) == []


def test_with_a_list_only_listed_endpoints_pass() -> None:
    config = OperatorConfig(
        allowed_s3_endpoints=("minio.minio.svc:9000", "*.example.com", "127.0.0.1")
    )
    assert policy_problems(s3_output("http://minio.minio.svc:9000"), config) == []
    assert policy_problems(s3_output("https://s3.eu.example.com"), config) == []
    # Listing loopback is an administrator's explicit choice (a test cluster's S3 server).
    assert policy_problems(s3_output("http://127.0.0.1:9000"), config) == []
    (problem,) = policy_problems(s3_output("http://minio.minio.svc:9001"), config)
    assert "is not one of the S3 endpoints allowed in this cluster" in problem
    assert policy_problems(s3_output("https://attacker.example"), config) != []


@pytest.mark.parametrize(
    "endpoint",
    ["http://evil.com\\.minio.svc", "http://evil.com!.minio.svc", "http://evil.com%5c.minio.svc"],
)
def test_a_host_that_is_no_dns_name_does_not_pass_as_a_listed_suffix(endpoint: str) -> None:
    config = OperatorConfig(allowed_s3_endpoints=("*.minio.svc",))
    (problem,) = policy_problems(s3_output(endpoint), config)
    assert problem.startswith(f"spec.output.s3.endpoint: {endpoint} does not name its host as")


def test_ipv4_written_as_ipv6_is_refused_unless_nat64() -> None:
    (problem,) = policy_problems(s3_output("http://[::ffff:10.0.0.5]"), OperatorConfig())
    assert "is an IPv4 address written as IPv6" in problem
    assert "write the IPv4 address itself" in problem
    (problem,) = policy_problems(s3_output("http://[::10.0.0.5]"), OperatorConfig())
    assert "is an IPv4 address written as IPv6" in problem


def test_the_api_servers_address_as_the_operator_sees_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    for endpoint in ("https://10.96.0.1", "http://10.96.0.1:9000", "http://[64:ff9b::a60:1]"):
        (problem,) = policy_problems(s3_output(endpoint), OperatorConfig())
        assert problem.endswith("is the Kubernetes API server, not an S3 endpoint"), problem
    assert policy_problems(s3_output("http://10.96.0.2"), OperatorConfig()) == []
    # An administrator's list decides alone.
    listed = OperatorConfig(allowed_s3_endpoints=("10.96.0.1",))
    assert policy_problems(s3_output("https://10.96.0.1"), listed) == []
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1")
    assert policy_problems(s3_output("https://[fd00:10:96::1]"), OperatorConfig()) != []
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert policy_problems(s3_output("https://10.96.0.1"), OperatorConfig()) == []


def test_a_long_endpoint_is_quoted_bounded() -> None:
    endpoint = "http://" + "a" * 1500 + "\\.minio.svc"
    (problem,) = policy_problems(s3_output(endpoint), OperatorConfig())
    assert len(problem) < 600 and "[truncated" in problem


def test_system_priority_classes_and_wildcard_tolerations_are_refused() -> None:
    spec = spec_of(
        {
            "scheduling": {
                "priorityClassName": "system-node-critical",
                "tolerations": [{"operator": "Exists"}, {"key": "gpu", "operator": "Exists"}],
            }
        }
    )
    problems = policy_problems(spec, OperatorConfig())
    assert problems[0].startswith("spec.scheduling.priorityClassName: system-node-critical is")
    assert problems[1].startswith("spec.scheduling.tolerations[0]: a toleration without a key")
    assert len(problems) == 2
    relaxed = OperatorConfig(
        allowed_priority_classes=("system-node-critical",), allow_wildcard_tolerations=True
    )
    assert policy_problems(spec, relaxed) == []
    listed = OperatorConfig(allowed_priority_classes=("batch-low",))
    problem = policy_problems(spec_of({"scheduling": {"priorityClassName": "high"}}), listed)
    assert problem == [
        "spec.scheduling.priorityClassName: high is not allowed in this cluster; leave it "
        "unset or use one of: batch-low"
    ]


def tolerating(*tolerations: dict[str, object]) -> FineTuneJobSpec:
    return spec_of({"scheduling": {"tolerations": list(tolerations)}})


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"},
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"},
        {"key": "node.kubernetes.io/out-of-service", "operator": "Equal", "value": "x"},
        {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists"},
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "ToBeDeletedByClusterAutoscaler", "operator": "Exists"},
        {"key": "DeletionCandidateOfClusterAutoscaler", "operator": "Exists"},
    ],
)
def test_tolerations_of_reserved_taints_are_refused(toleration: dict[str, object]) -> None:
    (problem,) = policy_problems(tolerating(toleration), OperatorConfig())
    assert problem == (
        f"spec.scheduling.tolerations[0]: {toleration['key']} is a taint Kubernetes reserves "
        "for control-plane, cordoned, unhealthy or add-on nodes, and tolerating it is not "
        "allowed in this cluster; remove the toleration, or ask an administrator to allow "
        "the key (trainer.allowedTolerationKeys)"
    )
    # Allowing wildcards is not allowing these; listing the key is.
    assert policy_problems(tolerating(toleration), OperatorConfig(allow_wildcard_tolerations=True))
    listed = OperatorConfig(allowed_toleration_keys=(str(toleration["key"]),))
    assert policy_problems(tolerating(toleration), listed) == []


def test_not_ready_and_unreachable_pass_only_as_kubernetes_adds_them() -> None:
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        delayed = {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
        assert policy_problems(tolerating(delayed), OperatorConfig()) == []
        forever = {"key": key, "operator": "Exists", "effect": "NoExecute"}
        scheduled = {"key": key, "operator": "Exists", "effect": "NoSchedule"}
        every = {"key": key, "operator": "Exists"}
        problems = policy_problems(tolerating(forever, scheduled, every), OperatorConfig())
        assert [p.split(":")[0] for p in problems] == [
            "spec.scheduling.tolerations[0]",
            "spec.scheduling.tolerations[1]",
            "spec.scheduling.tolerations[2]",
        ]
        expected = f"{key} may be tolerated only with effect NoExecute and a tolerationSeconds"
        assert expected in problems[0]
        listed = OperatorConfig(allowed_toleration_keys=(key,))
        assert policy_problems(tolerating(forever, scheduled, every), listed) == []


def test_other_taints_may_be_tolerated() -> None:
    spec = tolerating(
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "example.com/node.kubernetes.io", "operator": "Exists"},
    )
    assert policy_problems(spec, OperatorConfig()) == []


def test_the_new_lists_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "FTO_ALLOWED_S3_ENDPOINTS": "a.example:9000,*.b.example",
            "FTO_ALLOWED_PRIORITY_CLASSES": "low",
            "FTO_ALLOW_WILDCARD_TOLERATIONS": "true",
            "FTO_ALLOWED_TOLERATION_KEYS": "CriticalAddonsOnly, node-role.kubernetes.io/gpu",
        }
    )
    assert config.allowed_s3_endpoints == ("a.example:9000", "*.b.example")
    assert config.allowed_priority_classes == ("low",)
    assert config.allow_wildcard_tolerations is True
    assert config.allowed_toleration_keys == ("CriticalAddonsOnly", "node-role.kubernetes.io/gpu")
    with pytest.raises(ValueError, match="FTO_ALLOW_WILDCARD_TOLERATIONS must be true or false"):
        OperatorConfig.from_env({"FTO_ALLOW_WILDCARD_TOLERATIONS": "yes"})
