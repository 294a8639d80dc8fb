"""dataset.eval, training.evalSteps and earlyStopping, output.keep: each form accepted,
each wrong combination refused naming the field and the fix, the same rules at admission."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig, describe_errors
from finetune_api.config.eval_data import EVAL_RULES, eval_steps
from finetune_api.crd import build_crd


def config(**sections: Any) -> TrainerConfig:
    return TrainerConfig.from_mapping(sections)


def errors_of(**sections: Any) -> str:
    with pytest.raises(ValidationError) as info:
        TrainerConfig.from_mapping(sections)
    return "\n".join(describe_errors(info.value, prefix="spec"))


@pytest.mark.parametrize(
    "evaluation",
    [
        {"split": "test"},
        {"split": "train[90%:]"},
        {"name": "org/eval-set", "configName": "en", "revision": "v1", "split": "validation"},
        {"path": "/data/eval.jsonl"},
        {"pvc": {"claimName": "data", "path": "eval"}},
        {"s3": {"uri": "s3://bkt/eval", "credentialsSecretRef": {"name": "eval-s3"}}},
        {"s3": {"uri": "s3://bkt/eval.jsonl", "endpoint": "https://minio.example"}, "split": "t"},
        {"configMap": {"name": "held-out", "key": "eval.jsonl"}},
        {"configMap": {"name": "held-out", "key": "eval.json"}, "maxSamples": 3},
        {"fraction": 0.1},
        {"fraction": 0.5, "seed": 11, "maxSamples": 100},
    ],
)
def test_each_form_is_accepted(evaluation: dict[str, Any]) -> None:
    parsed = config(dataset={"eval": evaluation})
    assert parsed.dataset.eval is not None
    assert eval_steps(parsed) == parsed.training.save_steps  # default: every checkpoint


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ({}, "set one of dataset.eval.split"),
        ({"maxSamples": 5}, "set one of dataset.eval.split"),
        ({"fraction": 0.1, "split": "test"}, "dataset.eval.fraction holds rows out"),
        ({"fraction": 0.1, "path": "/e.jsonl"}, "dataset.eval.fraction holds rows out"),
        ({"fraction": 0}, "greater than 0"),
        ({"fraction": 0.51}, "less than or equal to 0.5"),
        ({"split": "test", "seed": 3}, "dataset.eval.seed is the seed of dataset.eval.fraction"),
        ({"name": "a/b", "path": "/e.jsonl"}, "set at most one of dataset.eval.name"),
        ({"path": "/e.jsonl", "revision": "v1"}, "only used with dataset.eval.name"),
        (
            {"s3": {"uri": "s3://bkt/e"}, "configMap": {"name": "m", "key": "e.jsonl"}},
            "set at most one of dataset.eval.name, dataset.eval.path, dataset.eval.pvc, "
            "dataset.eval.s3 and dataset.eval.configMap (got s3, configMap)",
        ),
        ({"pvc": {"claimName": "d"}, "s3": {"uri": "s3://bkt/e"}}, "(got pvc, s3)"),
        ({"fraction": 0.1, "s3": {"uri": "s3://bkt/e"}}, "dataset.eval.fraction holds rows out"),
        ({"s3": {"uri": "s3://bkt/e"}, "revision": "v1"}, "only used with dataset.eval.name"),
        ({"configMap": {"name": "m", "key": "eval.csv"}}, "must end in .jsonl or .json"),
        ({"s3": {"uri": "http://b/e"}}, "spec.dataset.eval.s3.uri"),
        ({"s3": {"uri": "s3://bkt/e", "credentialsSecretRef": {}}}, "credentialsSecretRef.name"),
    ],
)
def test_a_wrong_form_is_refused_naming_the_field(
    evaluation: dict[str, Any], expected: str
) -> None:
    message = errors_of(dataset={"eval": evaluation})
    assert "dataset.eval" in message and expected in message, message


def test_evaluation_settings_need_an_eval_set() -> None:
    for training in ({"evalSteps": 5}, {"earlyStopping": {"patience": 2}}):
        assert "need dataset.eval" in errors_of(training=training)
    assert "output.keep: best needs dataset.eval" in errors_of(output={"keep": "best"})


def test_keep_best_needs_every_evaluation_on_a_kept_checkpoint() -> None:
    evaluated = {"eval": {"split": "test"}}
    message = errors_of(
        dataset=evaluated, training={"saveSteps": 10, "evalSteps": 5}, output={"keep": "best"}
    )
    assert "make training.evalSteps a multiple of training.saveSteps" in message
    assert "(evalSteps 5, saveSteps 10)" in message
    message = errors_of(dataset=evaluated, training={"saveTotalLimit": 2}, output={"keep": "best"})
    assert "leave training.saveTotalLimit unset" in message
    parsed = config(
        dataset=evaluated,
        training={"maxSteps": 40, "saveSteps": 10, "evalSteps": 20},
        output={"keep": "best"},
    )
    assert eval_steps(parsed) == 20 and parsed.output.keep == "best"


def test_early_stopping_settings() -> None:
    parsed = config(
        dataset={"eval": {"fraction": 0.2}},
        training={"earlyStopping": {"patience": 3, "minDelta": 0.01}},
    )
    early = parsed.training.early_stopping
    assert early is not None and (early.patience, early.min_delta) == (3, 0.01)
    assert (
        parsed.training.early_stopping
        == config(
            dataset={"eval": {"fraction": 0.2}},
            training={"early_stopping": {"patience": 3, "min_delta": 0.01}},
        ).training.early_stopping
    )
    assert "patience" in errors_of(
        dataset={"eval": {"fraction": 0.2}}, training={"earlyStopping": {"patience": 0}}
    )


def test_a_config_without_evaluation_keeps_its_wire_form_and_fingerprint() -> None:
    """No eval key appears unless set, so the config a FineTuneJob's Job carries, and the
    fingerprint its checkpoints were written under, are what they were."""
    plain = config()
    wire = plain.to_wire()
    assert "eval" not in wire["dataset"] and "keep" not in wire["output"]
    assert not {"evalSteps", "earlyStopping"} & wire["training"].keys()
    assert plain.fingerprint() == "1a484c44838778d6"
    assert config(dataset={"eval": {"fraction": 0.2}}).fingerprint() != plain.fingerprint()


def _rules(node: dict[str, Any]) -> dict[str, str]:
    return {r["message"]: r["rule"] for r in node.get("x-kubernetes-validations") or []}


def test_the_rules_are_admission_rules_too() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    top = _rules(spec)
    for rule in EVAL_RULES:
        assert top[rule["message"]] == rule["rule"]
    evaluation = spec["properties"]["dataset"]["properties"]["eval"]
    messages = set(_rules(evaluation))
    assert "dataset.eval.seed needs fraction" in messages
    assert any(m.startswith("set one of dataset.eval.split") for m in messages)
    assert evaluation["properties"]["fraction"]["maximum"] == 0.5
    one_source = next(m for m in messages if m.startswith("set at most one of dataset.eval"))
    assert "dataset.eval.s3 and dataset.eval.configMap" in one_source
    dataset = spec["properties"]["dataset"]["properties"]
    for kind in ("s3", "configMap"):  # the same types as the training source's
        assert evaluation["properties"][kind] == dataset[kind] | {
            "description": evaluation["properties"][kind]["description"]
        }
    key = evaluation["properties"]["configMap"]["properties"]["key"]
    assert _rules(key) == {
        next(iter(_rules(key))): "self.endsWith('.jsonl') || self.endsWith('.json')"
    }
    printer = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {
        "name": "Eval Loss",
        "type": "string",
        "jsonPath": ".status.progress.evalLossDisplay",
    } in printer
