"""Load training rows from the Hugging Face Hub or from local JSON, JSON Lines and Parquet
files, and turn every way that can fail into an error that says what to fix."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from finetune_api.config import DatasetSpec

from ..errors import InvalidDataset
from ..remote_errors import RemoteFailure, bounded, hub_problem, is_remote
from .json_check import json_problem
from .json_depth import JsonTooDeep, check_json_depth
from .split_expr import files_by_split, split_name

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

# File extension -> the datasets library's builder that reads it.
SUPPORTED_EXTENSIONS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SUPPORTED = ", ".join(SUPPORTED_EXTENSIONS)


def load_rows(
    spec: DatasetSpec,
    local_path: Path | None,
    *,
    token: str | None = None,
    cache_dir: Path | None = None,
) -> datasets.Dataset:
    """The rows to train on: ``spec.split`` (slicing included) of the Hub dataset
    ``spec.name`` when ``local_path`` is None, else of the local file or directory at
    ``local_path`` (pvc, configMap and s3 sources already resolved to it by the caller);
    then the first ``spec.max_samples`` rows. Raises InvalidDataset for input that cannot
    work: a missing file, an unsupported extension, unreadable JSON (with its line), an
    unknown split (naming the available ones), an unknown Hub dataset, no rows."""
    if local_path is None:
        rows = _load_hub(spec, token=token, cache_dir=cache_dir)
        where = f"Hub dataset {spec.name} (split {spec.split})"
    else:
        rows = _load_local(Path(local_path), spec.split, cache_dir=cache_dir)
        where = f"{local_path} (split {spec.split})"
    if len(rows) == 0:
        raise InvalidDataset(
            f"{where} has no rows; give a dataset with at least one row, or a wider split"
        )
    if spec.max_samples is not None and spec.max_samples < len(rows):
        rows = rows.select(range(spec.max_samples))
    log.info("loaded %d rows from %s", len(rows), where)
    return rows


# --- Local files ---------------------------------------------------------------------------


def _data_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InvalidDataset(
            f"dataset path {path} does not exist; check the dataset source (path, pvc, s3 or "
            "configMap) and that the file was written there"
        )
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise InvalidDataset(
                f"dataset file {path} has the unsupported extension "
                f"{path.suffix or '(none)'!r}; supported: {_SUPPORTED}"
            )
        return [path]
    found = sorted(
        p
        for p in path.rglob("*")
        # Hidden entries include the ..data links of a mounted ConfigMap and tool caches.
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    files = [p for p in found if p.suffix.lower() in SUPPORTED_EXTENSIONS]
    if not files:
        seen = ", ".join(p.name for p in found[:5]) or "nothing"
        raise InvalidDataset(
            f"dataset directory {path} holds no {_SUPPORTED} files (found: {seen}); put the "
            "data files there or point the dataset source at a file"
        )
    builders = {SUPPORTED_EXTENSIONS[p.suffix.lower()] for p in files}
    if len(builders) > 1:
        raise InvalidDataset(
            f"dataset directory {path} mixes JSON and Parquet files; keep one format per "
            "dataset directory"
        )
    return files


def _load_local(path: Path, split: str, *, cache_dir: Path | None) -> datasets.Dataset:
    import datasets

    files = _data_files(path)
    root = path if path.is_dir() else path.parent
    splits = files_by_split(root, files) if path.is_dir() else {"train": files}
    wanted = split_name(split)
    if wanted not in splits:
        raise InvalidDataset(
            f"dataset split {wanted!r} is not in {path}; available: "
            f"{', '.join(sorted(splits))} (a single file, or files whose names name no split, "
            "form the 'train' split); set dataset.split to one of them"
        )
    chosen = splits[wanted]
    for file in chosen:
        if file.stat().st_size == 0:
            raise InvalidDataset(f"dataset file {file} is empty; write rows into it")
    builder = SUPPORTED_EXTENSIONS[chosen[0].suffix.lower()]
    if builder == "json":
        for file in chosen:
            _check_depth(file)
    try:
        rows = datasets.load_dataset(
            builder,
            data_files={wanted: [str(f) for f in chosen]},
            split=split,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except Exception as err:
        raise _explain_local_failure(chosen, builder, err) from err
    assert isinstance(rows, datasets.Dataset)
    return rows


def _check_depth(file: Path) -> None:
    """Refuse a JSON file nested deeper than the reader survives, before it reads it."""
    try:
        check_json_depth(file)
    except JsonTooDeep as exc:
        raise InvalidDataset(
            f"dataset file {file} nests JSON deeper than {exc.limit} levels at line "
            f"{exc.line}; the depth limit is {exc.limit} (a JSON reader would crash on "
            "it): flatten that row, or remove it"
        ) from None


def _explain_local_failure(files: list[Path], builder: str, err: Exception) -> Exception:
    """Turn a failed local load into InvalidDataset naming the file and, for JSON, the line.
    Failures not caused by the files' content (a full disk, say) are returned unchanged."""
    if builder == "json":
        for file in files:
            problem = json_problem(file)
            if problem is not None:
                return InvalidDataset(f"dataset file {file} {problem}; fix the file")
    names = ", ".join(str(f) for f in files[:3])
    if "corresponds to no data" in str(err):
        return InvalidDataset(
            f"the dataset in {names} has no rows; give a dataset with at least one row"
        )
    if isinstance(err, OSError) and not _is_arrow_error(err):
        return err
    return InvalidDataset(
        f"could not read the dataset from {names}: {_root_cause(err)}; check that the files "
        "are valid and that every row has the same columns with the same types"
    )


def _is_arrow_error(err: BaseException) -> bool:
    import pyarrow

    return isinstance(err, pyarrow.ArrowException)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


# --- The Hugging Face Hub ------------------------------------------------------------------


def _hub_offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _raise_hub_failure(spec: DatasetSpec, err: BaseException) -> None:
    """When a request to the Hub is behind ``err``: raise RemoteFailure, the failure in the
    trainer's own words naming dataset.name (it may pass: the Job retries it)."""
    if is_remote(err):
        raise RemoteFailure(
            hub_problem(
                err,
                what=f"dataset.name {spec.name}",
                token_field="HF_TOKEN",
                elsewhere="put the data on a PVC, S3 or a local path and point the dataset "
                "source at it",
            )
        ) from err


def _load_hub(spec: DatasetSpec, *, token: str | None, cache_dir: Path | None) -> datasets.Dataset:
    """The Hub dataset's split. The datasets library's own text (a split it lacks, a config
    name missing) is quoted, bounded; what the Hub answered never is (remote_errors.py)."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    assert spec.name is not None
    try:
        rows = datasets.load_dataset(
            spec.name,
            spec.config_name,
            revision=spec.revision,
            split=spec.split,
            token=token,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except (ConnectionError, DatasetNotFoundError, FileNotFoundError) as err:
        if _hub_offline():
            raise InvalidDataset(
                f"Hub dataset {spec.name} is not in the local cache and Hub access is turned "
                "off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set); allow Hub access, or put "
                "the data on a PVC, S3 or a local path and point the dataset source at it"
            ) from err
        if isinstance(err, DatasetNotFoundError):
            raise InvalidDataset(
                f"Hub dataset {spec.name} was not found, or it is gated or private; check "
                "dataset.name (and dataset.revision), or give a token with access through "
                "HF_TOKEN"
            ) from err
        _raise_hub_failure(spec, err)  # a network failure may pass: the Job retries
        raise
    except ValueError as err:
        text = bounded(str(err), 500)
        if "Unknown split" in text or "Bad split" in text:
            raise InvalidDataset(
                f"Hub dataset {spec.name} has no split {spec.split!r}: {text}; set "
                "dataset.split to one of its splits"
            ) from err
        if "Config name is missing" in text or "BuilderConfig" in text:
            raise InvalidDataset(
                f"Hub dataset {spec.name}: {text}; set dataset.configName"
            ) from err
        if "corresponds to no data" in text:
            raise InvalidDataset(
                f"Hub dataset {spec.name} split {spec.split!r} has no rows; choose a split "
                "with rows"
            ) from err
        _raise_hub_failure(spec, err)
        raise
    except Exception as err:
        _raise_hub_failure(spec, err)
        raise
    assert isinstance(rows, datasets.Dataset)
    return rows
