"""Turn a pydantic ValidationError into messages that name the field and say what to fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

_BOUNDS = {
    "greater_than_equal": ("too small", "greater than or equal to", "ge"),
    "greater_than": ("too small", "greater than", "gt"),
    "less_than_equal": ("too large", "less than or equal to", "le"),
    "less_than": ("too large", "less than", "lt"),
}


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """('training', 'max_steps') -> 'training.maxSteps'; list indexes become [i]."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "loadIn4bit" if part == "load_in_4bit" else to_camel(part)
            out += ("." if out else "") + name
    return out or "(root)"


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _short(error.get("input"))
    if kind == "extra_forbidden":
        return (
            "unknown field; fix: remove it, or check its spelling against "
            "`kubectl explain finetunejob.spec` (keys are camelCase or snake_case)"
        )
    if kind == "missing":
        return "required; fix: add it"
    if kind == "literal_error":
        return f"{got} is not allowed; fix: use one of {ctx.get('expected')}"
    if kind in _BOUNDS:
        problem, relation, key = _BOUNDS[kind]
        return f"{got} is {problem}; fix: use a value {relation} {ctx.get(key)}"
    if kind == "string_pattern_mismatch":
        return f"{got} is not of the right form; fix: use a value matching {ctx.get('pattern')}"
    if kind in ("string_too_long", "too_long"):
        return f"too long; fix: {error['msg'].lower()}"
    if kind == "value_error":
        # Cross-field rules already say what is wrong and what to do.
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']} (got {got})"


def _error_path(err: Any, prefix: str) -> str:
    loc = err["loc"]
    if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
        # An unknown key is named as it was written, not as the schema would spell it.
        parent = field_path(loc[:-1], prefix) if loc[:-1] or prefix else ""
        return f"{parent}.{loc[-1]}" if parent else loc[-1]
    return field_path(loc, prefix)


def describe_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: '<field>: <what is wrong>; fix: <what to do>'."""
    return [
        f"{_error_path(err, prefix)}: {_describe(dict(err))}"
        for err in exc.errors(include_url=False)
    ]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
