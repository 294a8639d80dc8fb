"""``--set section.field=value``: change one field of the config file from the command
line, as ``helm --set`` does for values, without editing the file.

The value is read as YAML (``5`` is a number, ``true`` a flag, ``[a, b]`` a list, ``''``
an empty string) and the config is validated after every override is applied, so a bad
one is reported by the field it names, like a bad line in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic.alias_generators import to_camel, to_snake

from .errors import InvalidConfig

# Deep enough for every field of the config (output.s3.credentialsSecretRef.name is 4).
_MAX_DEPTH = 8


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``training.maxSteps=5`` -> (["training", "maxSteps"], 5)."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path) or len(path) > _MAX_DEPTH:
        raise InvalidConfig(
            f"--set {text!r}: write it as section.field=value, for example "
            "--set training.maxSteps=5"
        )
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"--set {text!r}: the value is not valid YAML: {exc}") from None
    return path, parsed


def _spelled_as_the_file(node: dict[str, Any], key: str) -> str:
    """``key`` as ``node`` already spells it: ``maxSteps`` for a file written in snake_case
    (the original example's) is its ``max_steps``, and the reverse."""
    if key in node:
        return key
    for spelling in (to_snake(key), to_camel(key)):
        if spelling in node:
            return spelling
    return key


def apply_assignments(data: Any, assignments: Sequence[str]) -> Any:
    """``data`` (the parsed config file) with each ``--set`` applied in order; sections
    that do not exist yet are created."""
    if not assignments:
        return data
    result: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    if data is not None and not isinstance(data, dict):
        raise InvalidConfig("--set needs a config file that is a mapping of sections")
    for text in assignments:
        path, value = parse_assignment(text)
        node = result
        for depth, written in enumerate(path[:-1]):
            part = _spelled_as_the_file(node, written)
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise InvalidConfig(
                    f"--set {text!r}: {where} is a value, not a section with fields"
                )
            else:
                child = dict(child)  # the file's own mapping stays as it was read
            node[part] = child
            node = child
        node[_spelled_as_the_file(node, path[-1])] = value
    return result
