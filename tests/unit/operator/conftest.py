"""Shared inputs for the operator's unit tests: FineTuneJob bodies and settings."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.builders import Owner
from finetune_operator.config import OperatorConfig

UID = "6f1c2a9e-0000-4000-8000-000000000001"
JOB_UID = "0b1c2d3e-0000-4000-8000-00000000000a"
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


def pod(
    phase: str = "Pending",
    *,
    name: str = "p1",
    created: str = "T1",
    state: dict | None = None,
    conditions: list[dict] | None = None,
    ip: str | None = None,
    deleting: bool = False,
    controller_uid: str | None = JOB_UID,
) -> dict:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    if controller_uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "j",
                "uid": controller_uid,
                "controller": True,
            }
        ]
    if deleting:
        meta["deletionTimestamp"] = "T5"
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def terminated(code: int, message: str = "", reason: str = "Error", at: str = "T4") -> dict:
    return {
        "terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": at}
    }
