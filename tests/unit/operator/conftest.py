"""Shared inputs for the operator's unit tests: FineTuneJob bodies and settings."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_operator.api.spec import FineTuneJobSpec
from finetune_operator.builders import Owner
from finetune_operator.config import OperatorConfig

UID = "6f1c2a9e-0000-4000-8000-000000000001"
# A FineTuneJob must name output storage that outlives its pod; tests about other parts of
# the spec get this one unless they give their own.
OUTPUT = {"pvc": {"claimName": "outputs"}}


def with_output(spec: dict[str, Any]) -> dict[str, Any]:
    return spec if "output" in spec else {**spec, "output": OUTPUT}


def body(spec: dict[str, Any] | None = None, name: str = "gpt-oss-ml") -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "100",
        },
        "spec": with_output(spec or {}),
    }


@pytest.fixture
def owner() -> Owner:
    return Owner(name="gpt-oss-ml", namespace="ml", uid=UID)


@pytest.fixture
def settings() -> OperatorConfig:
    return OperatorConfig(trainer_image="registry.example/trainer:1.0")


def spec_of(data: dict[str, Any]) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(with_output(data))
