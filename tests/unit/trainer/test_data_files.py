"""Split expressions, split names implied by file names, and JSON diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_trainer.data.json_check import json_problem
from finetune_trainer.data.split_expr import files_by_split, split_name


@pytest.mark.parametrize(
    ("expr", "name"),
    [("train", "train"), ("train[:100]", "train"), ("test[10%:20%]", "test"), ("a.b-c", "a.b-c")],
)
def test_split_name(expr: str, name: str) -> None:
    assert split_name(expr) == name


def test_split_name_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a split expression"):
        split_name("train[:10")


def test_files_by_split_follows_hub_naming(tmp_path: Path) -> None:
    files = [
        tmp_path / "train-00000-of-00002.parquet",
        tmp_path / "train-00001-of-00002.parquet",
        tmp_path / "test.parquet",
        tmp_path / "validation" / "part-0.parquet",
        tmp_path / "notes.parquet",
    ]
    groups = files_by_split(tmp_path, files)
    assert groups == {
        "train": files[:2],
        "test": [files[2]],
        "validation": [files[3]],
    }


def test_files_naming_no_split_are_all_train(tmp_path: Path) -> None:
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    assert files_by_split(tmp_path, files) == {"train": files}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_json_lines_problem_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    assert json_problem(path) == "line 3 is not valid JSON (Expecting ',' delimiter at column 8)"


def test_json_lines_rows_must_be_objects(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n[1, 2]\n')
    assert json_problem(path) == (
        "line 2 is a JSON list, not an object; each line must be one row as a JSON object"
    )


def test_json_document_problem_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", '[\n {"a": 1},\n {"a": }\n]\n')
    problem = json_problem(path)
    assert problem is not None
    assert problem.startswith("is not valid JSON (Expecting value at line 3, column 8)")


def test_json_document_items_must_be_objects(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", '[{"a": 1}, 5]')
    assert json_problem(path) == (
        "item 1 of its top-level list is a JSON int, not an object; each row must be a JSON object"
    )


def test_good_and_empty_and_binary_files(tmp_path: Path) -> None:
    assert json_problem(_write(tmp_path / "ok.jsonl", '{"a": 1}\n{"a": 2}\n')) is None
    assert json_problem(_write(tmp_path / "ok.json", '[{"a": 1}]')) is None
    assert json_problem(_write(tmp_path / "empty.jsonl", "\n \n")) == "is empty"
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"a": "\xff"}\n')
    assert json_problem(binary) == "is not UTF-8 text (bad byte at offset 7)"
