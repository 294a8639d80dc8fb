"""Find what is wrong with a JSON or JSON Lines file, to the line, when loading it failed.

The datasets library reads JSON through Arrow, whose errors name neither the file nor the
line. This check only runs after a load failed, so a good file is never parsed twice.
"""

from __future__ import annotations

import json
from pathlib import Path


def _json_lines_problem(text: str) -> str | None:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return f"line {lineno} is not valid JSON ({err.msg} at column {err.colno})"
        if not isinstance(value, dict):
            return (
                f"line {lineno} is a JSON {type(value).__name__}, not an object; each line "
                "must be one row as a JSON object"
            )
    return None


def json_problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as rows, or None when it parses as rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return f"is not UTF-8 text (bad byte at offset {err.start})"
    stripped = text.lstrip()
    if not stripped:
        return "is empty"
    if stripped[0] == "[":
        # One JSON document holding a list of rows.
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            return f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return (
                    f"item {index} of its top-level list is a JSON {type(item).__name__}, "
                    "not an object; each row must be a JSON object"
                )
        return None
    try:
        json.loads(text)
        return None  # one JSON document (an object of columns): fine
    except json.JSONDecodeError:
        return _json_lines_problem(text)
