"""Split expressions (``train``, ``train[:100]``, ``train[10%:20%]``) and split names that a
directory of data files implies by its file and folder names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_SPLIT_EXPR = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?P<slice>\[[0-9%:+-]*\])?$")

# File and folder words that name a split, following the Hugging Face Hub's conventions
# (``train-00000-of-00002.parquet``, ``test.jsonl``, ``data/validation/part-0.json``).
_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
    "testing": "test",
}


def split_name(expr: str) -> str:
    """The split a split expression selects: ``train[:100]`` -> ``train``."""
    match = _SPLIT_EXPR.match(expr)
    if match is None:
        raise ValueError(f"not a split expression: {expr!r}")
    return match.group("name")


def _named_split(relative: Path) -> str | None:
    for part in (*relative.parent.parts, relative.name.split(".", 1)[0]):
        word = re.split(r"[-_.]", part.lower(), maxsplit=1)[0]
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def files_by_split(root: Path, files: Iterable[Path]) -> dict[str, list[Path]]:
    """Group a directory's data files by the split their names imply. When no file names a
    split, every file is in ``train``; files that name none are then left out, like the
    Hub does."""
    named: dict[str, list[Path]] = {}
    unnamed: list[Path] = []
    for path in files:
        split = _named_split(path.relative_to(root))
        if split is None:
            unnamed.append(path)
        else:
            named.setdefault(split, []).append(path)
    return named if named else {"train": unnamed}
