"""The provenance record and the model card, from real CPU runs of the tiny model through
the CLI: the record's fields, its digests stable across a rerun of the same config into a
fresh output and moved by one changed data row, provenance.json and README.md beside the
adapter (inside its manifest), and a model card with no blank template field."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_api.config import TrainerConfig
from finetune_api.contract import ExitCode, TerminationMessage, provenance_digest
from finetune_trainer.storage.manifest import verify_dir

from .cli_helpers import cli_env, termination
from .train_helpers import finish, start_cli, tiny_config


@dataclass
class Run:
    message: TerminationMessage
    final: Path
    config: dict[str, Any]


def _train(config: dict[str, Any], tmp: Path) -> Run:
    code, _, stderr = finish(start_cli(config, tmp, cli_env(tmp)))
    assert code == ExitCode.SUCCEEDED, stderr[-4000:]
    return Run(termination(tmp), Path(config["output"]["path"]) / "final_model", config)


def _short_config(model: Path, data: Path, out: Path) -> dict[str, Any]:
    return tiny_config(model, data, str(out), maxSteps=2, saveSteps=2)


@pytest.fixture(scope="module")
def runs(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, Run, Run]:
    """The same config trained twice into fresh outputs, then once more after the first
    row's answer changed by one word in the same file (same source, same config)."""
    first, again, changed = (tmp_path_factory.mktemp(name) for name in ("a", "b", "c"))
    data = tmp_path_factory.mktemp("data") / "train.jsonl"
    lines = tiny_dataset_path.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    runs = [
        _train(_short_config(tiny_model_dir, data, first / "out"), first),
        _train(_short_config(tiny_model_dir, data, again / "out"), again),
    ]
    row = json.loads(lines[0])
    answer = next(m for m in reversed(row["messages"]) if m["role"] == "assistant")
    answer["content"] = "Changed. " + answer["content"]
    data.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n", encoding="utf-8")
    runs.append(_train(_short_config(tiny_model_dir, data, changed / "out"), changed))
    return runs[0], runs[1], runs[2]


_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def test_the_record_has_every_field(runs: tuple[Run, Run, Run], tiny_model_dir: Path) -> None:
    run = runs[0]
    record = run.message.provenance
    assert record is not None
    assert record.model_source == str(tiny_model_dir)
    assert record.model_revision is not None and _SHA256.match(record.model_revision)
    assert record.dataset_source == run.config["dataset"]["path"]
    assert record.dataset_digest is not None and _SHA256.match(record.dataset_digest)
    assert record.dataset_rows == 4  # of the first six rows, four fit in 256 tokens
    config = TrainerConfig.from_mapping(run.config)
    assert record.config_fingerprint == config.fingerprint()
    for version in (
        record.trainer_version,
        record.torch_version,
        record.transformers_version,
        record.peft_version,
        record.trl_version,
    ):
        assert version
    assert (record.gpu_model, record.gpu_count) == ("cpu", 0)
    manifest = (run.final / "manifest.json").read_bytes()
    assert record.adapter_manifest_digest == "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_provenance_json_is_the_record_inside_the_manifest(runs: tuple[Run, Run, Run]) -> None:
    run = runs[0]
    record = run.message.provenance
    assert record is not None
    listed = {entry.path for entry in verify_dir(run.final).files}
    assert {"provenance.json", "README.md"} <= listed
    document = json.loads((run.final / "provenance.json").read_text(encoding="utf-8"))
    expected = record.to_wire()
    expected.pop("adapterManifestDigest")
    assert {k: v for k, v in document.items() if k not in ("format", "inputsDigest")} == expected
    assert document["inputsDigest"] == provenance_digest(
        str(record.model_revision), str(record.dataset_digest), str(record.config_fingerprint)
    )


def _digests(run: Run) -> dict[str, Any]:
    record = run.message.provenance
    assert record is not None
    document = json.loads((run.final / "provenance.json").read_text(encoding="utf-8"))
    return {
        "model": record.model_revision,
        "data": record.dataset_digest,
        "config": record.config_fingerprint,
        "inputs": document["inputsDigest"],
    }


def test_digests_are_stable_across_a_rerun_and_move_with_one_row(
    runs: tuple[Run, Run, Run],
) -> None:
    first, again, changed = (_digests(run) for run in runs)
    assert again == first
    assert changed["model"] == first["model"]
    assert changed["config"] == first["config"]  # the same source, by name...
    assert changed["data"] != first["data"]  # ...but not the same rows
    assert changed["inputs"] != first["inputs"]


def test_the_model_card_is_filled_from_the_run(
    runs: tuple[Run, Run, Run], tiny_model_dir: Path
) -> None:
    run = runs[0]
    card = (run.final / "README.md").read_text(encoding="utf-8")
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    meta = yaml.safe_load(front)
    # No Hub id for a local model, so no base_model at all (not PEFT's placeholder).
    assert "base_model" not in meta
    assert meta["library_name"] == "peft"
    assert all(value not in (None, "", []) for value in meta.values())
    # PEFT's template leaves "[More Information Needed]" in every section it cannot fill.
    assert "More Information Needed" not in card
    assert "tiny-model" not in card.replace(str(tiny_model_dir), "")
    assert f"# LoRA adapter for {tiny_model_dir}" in body
    record = run.message.provenance
    assert record is not None
    for expected in (
        "| LoRA rank (r) | 8 |",
        "| LoRA alpha | 16 |",
        "| LoRA dropout | 0.0 |",
        "| Learning rate | 0.01 (constant_with_warmup) |",
        "| Batch per device | 2 |",
        "| Gradient accumulation steps | 2 |",
        "| Optimizer steps trained | 2 |",
        "| Max sequence length | 256 |",
        "Final training loss",
        "Best training loss",
        "## Intended use and limitations",
        f"`{record.dataset_digest}`",
        f"`{record.model_revision}`",
        "4 rows trained on",
    ):
        assert expected in card, expected
    # A table row never has an empty cell.
    assert not re.search(r"\|\s*\|\s*$", "\n".join(line for line in body.splitlines()[3:]))
    assert "| None |" not in card and "None" not in body


def test_an_adapter_reported_again_keeps_its_record(
    runs: tuple[Run, Run, Run], tmp_path: Path
) -> None:
    """A later attempt that finds the adapter complete reports the record written with it."""
    run = runs[0]
    code, _, stderr = finish(start_cli(run.config, tmp_path, cli_env(tmp_path)))
    assert code == ExitCode.SUCCEEDED, stderr[-4000:]
    message = termination(tmp_path)
    assert message.reason == "AlreadyCompleted"
    assert message.provenance == run.message.provenance
