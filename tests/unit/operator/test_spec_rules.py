"""Values the API server would refuse when the Job is created are refused by the spec
instead, naming the field and the fix (the operator then reports InvalidSpec)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig
from finetune_api.spec import (
    DURABLE_OUTPUT_MESSAGE,
    RECREATE_FOR_OUTPUT,
    FineTuneJobSpec,
    output_problems,
)
from finetune_operator.config import OperatorConfig
from finetune_operator.reconciler import parse_spec

from .conftest import spec_of


def spec(**parts: Any) -> FineTuneJobSpec:
    return spec_of(parts)


@pytest.mark.parametrize("value", ["48Gi", "500m", "8", "1.5G", "0.5", ".5Gi", "1e3", "+2Ti"])
def test_quantities_kubernetes_accepts(value: str) -> None:
    assert spec(resources={"memory": value}).resources.memory == value


@pytest.mark.parametrize("value", ["-4Gi", "1.2.3Gi", "16GiGi", "Gi", "4 Gi", "4gi", "1e"])
def test_quantities_kubernetes_refuses(value: str) -> None:
    with pytest.raises(ValidationError, match=r"resources\.memory"):
        spec(resources={"memory": value})


@pytest.mark.parametrize(
    "toleration, fix",
    [
        ({"key": "gpu", "operator": "Exists", "value": "x"}, "remove value"),
        ({"key": "gpu", "operator": "Exists", "tolerationSeconds": 30}, "effect NoExecute"),
        ({"operator": "Equal", "value": "x"}, "must use operator Exists"),
    ],
)
def test_tolerations_kubernetes_refuses(toleration: dict[str, Any], fix: str) -> None:
    with pytest.raises(ValidationError, match=fix):
        spec(scheduling={"tolerations": [toleration]})


def test_tolerations_kubernetes_accepts() -> None:
    tolerations = [
        {"operator": "Exists"},
        {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
    ]
    assert len(spec(scheduling={"tolerations": tolerations}).scheduling.tolerations or []) == 3


def test_chart_tolerations_with_empty_strings_mean_unset() -> None:
    # The chart's values schema, like a pod spec, allows "" for an unset effect or key.
    env = {
        "FTO_DEFAULT_TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": ""}]'
    }
    config = OperatorConfig.from_env(env)
    assert config.default_tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists"},)


@pytest.mark.parametrize(
    "output",
    [None, {}, {"path": "/data/out"}, {"path": "outputs", "mergedExport": "merged_16bit"}],
)
def test_a_finetunejob_names_output_storage_that_outlives_its_pod(
    output: dict[str, Any] | None,
) -> None:
    spec_body: dict[str, Any] = {"training": {"maxSteps": 5}}
    if output is not None:
        spec_body["output"] = output
    # The spec still parses: a FineTuneJob admitted before the API server required durable
    # output may have a Job to report on. Only creating a Job for it is refused.
    parsed, problems = parse_spec({"spec": spec_body})
    assert problems == [] and parsed is not None
    problems = output_problems(parsed)
    assert problems == [f"spec.output: {DURABLE_OUTPUT_MESSAGE}; {RECREATE_FOR_OUTPUT}"]
    assert "set spec.output.pvc" in problems[0] and "spec.output.s3" in problems[0]


@pytest.mark.parametrize(
    "output", [{"pvc": {"claimName": "outs"}}, {"s3": {"uri": "s3://bucket/runs"}}]
)
def test_pvc_or_s3_output_is_enough(output: dict[str, Any]) -> None:
    parsed, problems = parse_spec({"spec": {"output": output}})
    assert problems == [] and parsed is not None
    assert output_problems(parsed) == []


def test_the_trainers_own_config_keeps_its_local_default() -> None:
    # Outside Kubernetes a local directory is durable; only the FineTuneJob needs more.
    assert TrainerConfig.from_mapping({}).output.path == "outputs"
