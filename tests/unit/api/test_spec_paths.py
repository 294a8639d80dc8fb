"""A FineTuneJob's model.path and dataset.path must be absolute: in the trainer pod a
relative path is relative to an empty scratch directory (and a relative dataset.path was
once read as a Hub dataset id). Refused by the operator's parse of the spec and, with the
same message, by a CEL rule at admission; the trainer's own config still takes them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig, describe_errors
from finetune_api.crd import build_crd
from finetune_api.spec import FineTuneJobSpec, relative_path_message

OUTPUT = {"output": {"pvc": {"claimName": "outputs"}}}


def spec_errors(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        FineTuneJobSpec.model_validate({**OUTPUT, **spec})
    return describe_errors(info.value, prefix="spec")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"dataset": {"path": "team/chats"}}, "dataset"),
        ({"dataset": {"path": "./my_conversations.json"}}, "dataset"),
        ({"dataset": {"path": "data.jsonl"}}, "dataset"),
        ({"model": {"path": "models/gpt-oss"}}, "model"),
        ({"model": {"path": "~/models"}}, "model"),
        ({"dataset": {"path": "/d/train.jsonl", "eval": {"path": "eval.jsonl"}}}, "dataset"),
    ],
)
def test_the_spec_refuses_a_relative_path(spec: dict[str, Any], field: str) -> None:
    lines = spec_errors(spec)
    part = "dataset.eval" if "eval" in spec.get("dataset", {}) else field
    assert f"spec.{field}: {relative_path_message(part)}" in lines, lines
    # The trainer's own config reads the same section as it always did.
    TrainerConfig.from_mapping(spec)


def test_the_message_says_why_and_what_to_use() -> None:
    message = relative_path_message("dataset")
    assert message.startswith("dataset.path must be an absolute path")
    assert "relative to an empty scratch directory" in message
    assert "dataset.pvc" in message
    assert "model.pvc" in relative_path_message("model")


def test_the_spec_takes_absolute_paths() -> None:
    spec = FineTuneJobSpec.model_validate(
        {**OUTPUT, "dataset": {"path": "/data/train.jsonl"}, "model": {"path": "/models/m"}}
    )
    assert spec.trainer_config().dataset.path == "/data/train.jsonl"


@pytest.mark.parametrize(
    ("part", "present"),
    [
        ("model", "!has(self.model) || "),
        ("dataset", "!has(self.dataset) || "),
        ("dataset.eval", "!has(self.dataset) || !has(self.dataset.eval) || "),
    ],
)
def test_admission_refuses_it_with_the_same_message(part: str, present: str) -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = (
        r for r in spec["x-kubernetes-validations"] if r["message"] == relative_path_message(part)
    )
    assert rule == {
        "rule": f"oldSelf.hasValue() || {present}!has(self.{part}.path) || "
        f"self.{part}.path.startsWith('/')",
        "message": relative_path_message(part),
        # On create, like the output rule: the section is immutable after that, and a
        # FineTuneJob admitted before the rule keeps an editable lifecycle.
        "optionalOldSelf": True,
    }


def test_a_nul_in_the_image_is_refused() -> None:
    assert "spec.image: must not contain a NUL character" in spec_errors({"image": "a\x00b"})
