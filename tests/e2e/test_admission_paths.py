"""Admission on a real API server refuses what the trainer must never be handed: a NUL in
a path, URI or name, and a relative model.path or dataset.path (relative, in the trainer
pod, to an empty scratch directory). The pydantic side of the same rules is in
tests/unit/api."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import relative_path_message
from finetune_localcluster.cluster import LocalCluster

from .ftj import FineTuneJobs

OUTPUT = {"output": {"pvc": {"claimName": "outputs"}}}


@pytest.fixture
def ftjs(cluster: LocalCluster, crd: Path, namespace: str) -> FineTuneJobs:
    """FineTuneJobs against the API server alone: admission needs no operator."""
    return FineTuneJobs(cluster, namespace)


def dry_run(ftjs: FineTuneJobs, spec: dict[str, Any]) -> Any:
    manifest = ftjs.manifest("paths", {**OUTPUT, **spec})
    return ftjs.kubectl("create", "--dry-run=server", "-f", "-", input=manifest, check=False)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"dataset": {"path": "/data/a\x00.jsonl"}}, "spec.dataset.path"),
        ({"model": {"path": "/models/\x00"}}, "spec.model.path"),
        ({"dataset": {"pvc": {"claimName": "d", "path": "x\x00"}}}, "spec.dataset.pvc.path"),
        ({"output": {"s3": {"uri": "s3://bucket/runs/\x00"}}}, "spec.output.s3.uri"),
        ({"model": {"name": "org/m", "revision": "main\x00"}}, "spec.model.revision"),
        ({"image": "registry.example/trainer:1\x00"}, "spec.image"),
    ],
)
def test_a_nul_is_refused_naming_the_field(
    ftjs: FineTuneJobs, spec: dict[str, Any], field: str
) -> None:
    result = dry_run(ftjs, spec)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert "must not contain a NUL character" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("spec", "part"),
    [
        ({"dataset": {"path": "team/chats"}}, "dataset"),
        ({"dataset": {"path": "./my_conversations.json"}}, "dataset"),
        ({"model": {"path": "models/gpt-oss"}}, "model"),
        (
            {"dataset": {"path": "/data/train.jsonl", "eval": {"path": "eval.jsonl"}}},
            "dataset.eval",
        ),
    ],
)
def test_a_relative_path_is_refused(ftjs: FineTuneJobs, spec: dict[str, Any], part: str) -> None:
    result = dry_run(ftjs, spec)
    assert result.returncode != 0
    assert relative_path_message(part) in " ".join(result.stderr.split()), result.stderr


def test_absolute_paths_are_admitted(ftjs: FineTuneJobs) -> None:
    result = dry_run(ftjs, {"dataset": {"path": "/data/train.jsonl"}, "model": {"path": "/m"}})
    assert result.returncode == 0, result.stderr


def test_a_dataset_configmap_key_must_say_its_format(ftjs: FineTuneJobs) -> None:
    """The trainer reads the key as a .jsonl or .json file: a key that names neither is
    refused at admission instead of failing the run after its pod started."""
    refused = dry_run(ftjs, {"dataset": {"configMap": {"name": "chats", "key": "train"}}})
    assert refused.returncode != 0
    assert "spec.dataset.configMap.key" in refused.stderr, refused.stderr
    assert "must end in .jsonl or .json" in " ".join(refused.stderr.split()), refused.stderr
    for key in ("train.jsonl", "train.json"):
        admitted = dry_run(ftjs, {"dataset": {"configMap": {"name": "chats", "key": key}}})
        assert admitted.returncode == 0, admitted.stderr


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        (
            {"s3": {"uri": "s3://evals/chats.jsonl"}, "configMap": {"name": "c", "key": "e.jsonl"}},
            "set at most one of dataset.eval.name",
        ),
        ({"configMap": {"name": "c", "key": "e.txt"}}, ".jsonl"),
        ({"s3": {"uri": "s3://evals/e.jsonl"}, "revision": "main"}, "dataset.eval.revision"),
    ],
)
def test_an_eval_source_the_operator_would_refuse_is_refused_at_admission(
    ftjs: FineTuneJobs, evaluation: dict[str, Any], message: str
) -> None:
    result = dry_run(ftjs, {"dataset": {"path": "/data/train.jsonl", "eval": evaluation}})
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr


def test_eval_sets_on_s3_and_in_a_config_map_are_admitted(ftjs: FineTuneJobs) -> None:
    for evaluation in (
        {"s3": {"uri": "s3://evals/chats.jsonl"}},
        {"configMap": {"name": "evals", "key": "chats.jsonl"}},
    ):
        result = dry_run(ftjs, {"dataset": {"path": "/data/train.jsonl", "eval": evaluation}})
        assert result.returncode == 0, result.stderr
