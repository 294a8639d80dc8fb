"""The cluster's policy for training.mlflow.trackingUri: a tenant may not aim the trainer
(with the run's parameters, adapter and tracking credentials) at cloud metadata, loopback,
the API server, in-cluster services or private addresses unless the cluster lists them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from finetune_operator.config import OperatorConfig
from finetune_operator.policy import policy_problems, tracking_uri_problem

from .conftest import spec_of


def spec_with(uri: str) -> object:
    return spec_of({"training": {"reportTo": ["mlflow"], "mlflow": {"trackingUri": uri}}})


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest",
        "http://metadata.google.internal",
        "http://[fd00:ec2::254]",
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "http://2852039166/",
        "https://kubernetes.default.svc",
        "http://mlflow:5000",
        "http://mlflow.mlflow:5000",
        "http://mlflow.mlflow.svc:5000",
        "http://mlflow.mlflow.svc.cluster.local:5000",
        "http://10.96.0.10:5000",
        "http://192.168.1.5",
        "http://[fd12::1]",
    ],
)
def test_refused_by_default(uri: str) -> None:
    assert tracking_uri_problem(uri, ()) is not None


def test_a_public_host_passes() -> None:
    assert tracking_uri_problem("https://mlflow.example.com", ()) is None


def test_a_listed_in_cluster_service_passes_and_nothing_else() -> None:
    allowed = ("mlflow.mlflow.svc:5000",)
    assert tracking_uri_problem("http://mlflow.mlflow.svc:5000", allowed) is None
    problem = tracking_uri_problem("https://mlflow.example.com", allowed)
    assert problem == "is not one of the tracking hosts allowed in this cluster: " + allowed[0]


def test_the_problem_names_the_field(settings: OperatorConfig) -> None:
    problems = policy_problems(spec_with("http://169.254.169.254/"), settings)  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problems[0].startswith("spec.training.mlflow.trackingUri: http://169.254.169.254/ ")
    listed = replace(settings, allowed_tracking_hosts=("169.254.169.254",))
    assert policy_problems(spec_with("http://169.254.169.254/"), listed) == []  # type: ignore[arg-type]


def test_a_long_uri_is_quoted_bounded(settings: OperatorConfig) -> None:
    uri = "http://10.0.0.1/" + "a" * 1500
    (problem,) = policy_problems(spec_with(uri), settings)  # type: ignore[arg-type]
    assert len(problem) < 800


def test_the_setting_reads_from_the_environment() -> None:
    config = OperatorConfig.from_env({"FTO_ALLOWED_TRACKING_HOSTS": "a.example.com, *.svc"})
    assert config.allowed_tracking_hosts == ("a.example.com", "*.svc")
