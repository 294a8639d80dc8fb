"""Loading rows from local files (each format, directories, splits, max_samples), and the
error for every kind of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetune_api.config import DatasetSpec
from finetune_trainer.data import load_rows
from finetune_trainer.errors import InvalidDataset
from finetune_trainer.fixtures import generate_rows, write_tiny_dataset

COLUMNS = ["reasoning_language", "developer", "user", "analysis", "final", "messages"]


def _spec(**fields: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"path": "/data", **fields})


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_each_local_format_loads(tmp_path: Path, fmt: str) -> None:
    path = write_tiny_dataset(tmp_path / f"data.{fmt}", rows=12, seed=1, fmt=fmt)  # type: ignore[arg-type]
    rows = load_rows(_spec(), path, cache_dir=tmp_path / "cache")
    assert len(rows) == 12
    assert rows.column_names == COLUMNS
    assert rows[0] == generate_rows(12, seed=1)[0]


def test_a_directory_of_files_loads_them_all_in_name_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiny_dataset(data / "part-b.jsonl", rows=3, seed=2)
    write_tiny_dataset(data / "part-a.jsonl", rows=5, seed=1)
    # Hidden entries (a mounted ConfigMap's ..data links, editor files) are not data.
    (data / "..data").mkdir()
    write_tiny_dataset(data / "..data" / "copy.jsonl", rows=7, seed=3)
    (data / ".notes.jsonl").write_text("not json")
    rows = load_rows(_spec(), data, cache_dir=tmp_path / "cache")
    assert len(rows) == 8
    assert rows[0]["user"] == generate_rows(5, seed=1)[0]["user"]


def test_split_named_files_in_a_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiny_dataset(data / "train-00000-of-00001.parquet", rows=6, seed=1, fmt="parquet")
    write_tiny_dataset(data / "test.parquet", rows=2, seed=2, fmt="parquet")
    assert len(load_rows(_spec(), data, cache_dir=tmp_path / "c")) == 6
    test_rows = load_rows(_spec(split="test"), data, cache_dir=tmp_path / "c")
    assert len(test_rows) == 2
    with pytest.raises(InvalidDataset) as caught:
        load_rows(_spec(split="validation"), data, cache_dir=tmp_path / "c")
    assert "split 'validation' is not in" in str(caught.value)
    assert "available: test, train" in str(caught.value)


@pytest.mark.parametrize(
    ("split", "first", "count"),
    [("train[:10]", 0, 10), ("train[10:15]", 10, 5), ("train[50%:]", 10, 10)],
)
def test_split_slicing_on_local_files(tmp_path: Path, split: str, first: int, count: int) -> None:
    path = write_tiny_dataset(tmp_path / "d.jsonl", rows=20, seed=0)
    rows = load_rows(_spec(split=split), path, cache_dir=tmp_path / "cache")
    assert len(rows) == count
    assert rows[0]["user"] == generate_rows(20, seed=0)[first]["user"]


def test_max_samples_keeps_the_first_rows_after_the_split(tmp_path: Path) -> None:
    path = write_tiny_dataset(tmp_path / "d.jsonl", rows=20, seed=0)
    rows = load_rows(_spec(split="train[5:]", max_samples=3), path, cache_dir=tmp_path / "c")
    assert [r["user"] for r in rows] == [r["user"] for r in generate_rows(20, seed=0)[5:8]]
    # More samples than rows: all rows.
    assert len(load_rows(_spec(max_samples=500), path, cache_dir=tmp_path / "c")) == 20


def _error(tmp_path: Path, path: Path, **fields: object) -> str:
    with pytest.raises(InvalidDataset) as caught:
        load_rows(_spec(**fields), path, cache_dir=tmp_path / "cache")
    assert caught.value.reason == "InvalidDataset"
    return str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path, tmp_path / "nope.jsonl")
    assert f"dataset path {tmp_path / 'nope.jsonl'} does not exist" in message
    assert "check the dataset source" in message


def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    message = _error(tmp_path, path)
    assert "unsupported extension '.csv'" in message
    assert "supported: .json, .jsonl, .parquet" in message


def test_directory_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "readme.txt").write_text("hi")
    message = _error(tmp_path, tmp_path / "d")
    assert "holds no .json, .jsonl, .parquet files (found: readme.txt)" in message


def test_directory_mixing_formats(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path / "d" / "a.jsonl", rows=2)
    write_tiny_dataset(tmp_path / "d" / "b.parquet", rows=2, fmt="parquet")
    assert "mixes JSON and Parquet files" in _error(tmp_path, tmp_path / "d")


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = write_tiny_dataset(tmp_path / "d.jsonl", rows=5)
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-1]  # drop the closing brace of the fourth row
    path.write_text("\n".join(lines) + "\n")
    message = _error(tmp_path, path)
    assert f"dataset file {path} line 4 is not valid JSON" in message
    assert "fix the file" in message


def test_bad_json_document_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n{"messages": []},\n{"messages": [}\n]\n')
    message = _error(tmp_path, path)
    assert "is not valid JSON" in message
    assert "line 3" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("")
    assert f"dataset file {path} is empty" in _error(tmp_path, path)


def test_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("[]")
    message = _error(tmp_path, path)
    assert "has no rows" in message


def test_unknown_split_of_a_single_file(tmp_path: Path) -> None:
    path = write_tiny_dataset(tmp_path / "d.jsonl", rows=3)
    message = _error(tmp_path, path, split="test")
    assert "split 'test' is not in" in message
    assert "available: train" in message
    assert "set dataset.split" in message


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    message = _error(tmp_path, path)
    assert f"could not read the dataset from {path}: ArrowInvalid: Parquet magic bytes" in message
    assert "check that the files are valid" in message


def test_hub_dataset_without_hub_access_says_what_to_do(tmp_path: Path) -> None:
    # No network here: with the Hub turned off and an empty cache, the error must say so.
    # A fresh interpreter, because the Hub libraries read the offline switch at import.
    script = textwrap.dedent(
        """
        import sys
        from finetune_api.config import DatasetSpec
        from finetune_trainer.data import load_rows
        from finetune_trainer.errors import InvalidDataset
        try:
            load_rows(DatasetSpec(), None, cache_dir=sys.argv[1])
        except InvalidDataset as err:
            print(err)
        else:
            print("loaded?!")
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    message = done.stdout
    assert "Hub dataset HuggingFaceH4/Multilingual-Thinking is not in the local cache" in message
    assert "HF_HUB_OFFLINE" in message
    assert "put the data on a PVC, S3 or a local path" in message
