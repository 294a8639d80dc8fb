"""JSON nested deeper than a reader survives is refused before any parser sees it: the
scan itself, the loader's error, and the real CLI exiting 78 on such a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api.config import TrainerConfig
from finetune_api.contract import ExitCode
from finetune_trainer.data import load_rows
from finetune_trainer.data.json_depth import MAX_JSON_DEPTH, JsonTooDeep, check_json_depth
from finetune_trainer.errors import InvalidDataset
from finetune_trainer.fixtures import generate_rows

from .cli_helpers import cli_env, run_cli, termination, write_config

GOOD = json.dumps(generate_rows(1, seed=5)[0], ensure_ascii=False)


def nested(depth: int) -> str:
    """One JSON Lines row whose messages column is ``depth`` levels deep in all."""
    inner = "[" * (depth - 2) + "1" + "]" * (depth - 2)
    return '{"messages": [' + inner + "]}"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1 << 20])
def test_the_limit_is_exact_and_the_line_is_named(tmp_path: Path, chunk_size: int) -> None:
    at_limit = write(tmp_path / "ok.jsonl", GOOD, nested(MAX_JSON_DEPTH), GOOD)
    check_json_depth(at_limit, chunk_size=chunk_size)
    over = write(tmp_path / "deep.jsonl", GOOD, GOOD, nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooDeep) as caught:
        check_json_depth(over, chunk_size=chunk_size)
    assert (caught.value.line, caught.value.limit) == (3, MAX_JSON_DEPTH)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1 << 20])
def test_brackets_in_strings_do_not_count(tmp_path: Path, chunk_size: int) -> None:
    text = "[" * 500 + '\\"[{' + "\\\\" + "{" * 50
    row = json.dumps({"messages": [{"role": "user", "content": text}]})
    # Escaped quotes and backslashes, split anywhere by the chunking, stay inside.
    path = write(tmp_path / "strings.jsonl", row, row)
    check_json_depth(path, limit=3, chunk_size=chunk_size)
    with pytest.raises(JsonTooDeep) as caught:
        check_json_depth(path, limit=2, chunk_size=chunk_size)
    assert caught.value.line == 1


def test_a_pretty_printed_document_counts_across_lines(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps([{"messages": [[[["x"]]]]}], indent=2), encoding="utf-8")
    check_json_depth(path, limit=6)
    with pytest.raises(JsonTooDeep) as caught:
        check_json_depth(path, limit=5)
    assert caught.value.line == 6  # the line of the sixth opening bracket


def test_the_loader_refuses_it_naming_file_line_and_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "deep.jsonl", GOOD, nested(20_000))
    config = TrainerConfig.from_mapping({"dataset": {"path": str(path)}})
    with pytest.raises(InvalidDataset) as caught:
        load_rows(config.dataset, path, cache_dir=tmp_path / "cache")
    assert str(caught.value).startswith(
        f"dataset file {path} nests JSON deeper than {MAX_JSON_DEPTH} levels at line 2; "
        f"the depth limit is {MAX_JSON_DEPTH}"
    )


def test_the_cli_exits_78_on_a_20000_deep_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real finetune-train command, as the container runs it: it fails fast with the
    bad-input code instead of crashing the reader (which the Job would retry)."""
    data = write(tmp_path / "deep.jsonl", GOOD, GOOD, nested(20_000), GOOD)
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model": {"path": str(tiny_model_dir)},
            "dataset": {"path": str(data)},
            "output": {"path": str(tmp_path / "out")},
            "training": {"maxSteps": 1},
        },
    )
    result = run_cli(["--config", str(config)], cli_env(tmp_path), timeout=180)
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr[-3000:]
    message = termination(tmp_path)
    assert (message.status, message.reason) == ("invalid_input", "InvalidDataset")
    assert f"dataset file {data} nests JSON deeper than 100 levels at line 3" in message.message
    assert "the depth limit is 100" in message.message
    assert "the depth limit is 100" in result.stderr
