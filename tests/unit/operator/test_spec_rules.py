"""Values the API server would refuse when the Job is created are refused by the spec
instead, naming the field and the fix (the operator then reports InvalidSpec)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_operator.api.spec import FineTuneJobSpec
from finetune_operator.config import OperatorConfig


def spec(**parts: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(parts)


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
