"""Check one row's chat messages or text before it is rendered and tokenized."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
# Roles whose text is the conversation itself: empty text there is a broken row.
_ROLES_NEEDING_CONTENT = ("user", "assistant")


class RowProblem(Exception):
    """What is wrong with one row, and how to fix it (no row index: the caller adds it)."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def clean_messages(value: Any, column: str) -> list[dict[str, Any]]:
    """The row's messages as plain dicts without null fields (Arrow fills absent keys with
    null), after checking roles, content and thinking. Raises RowProblem."""
    if value is None:
        raise RowProblem(f"column {column!r} is null; give a list of chat messages")
    if not isinstance(value, list):
        raise RowProblem(
            f"column {column!r} holds a {_type_name(value)}, not a list of chat messages "
            "(objects with role and content)"
        )
    if not value:
        raise RowProblem(
            f"column {column!r} holds an empty conversation; give at least a user and an "
            "assistant message"
        )
    messages = []
    for position, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise RowProblem(
                f"message {position} is a {_type_name(message)}, not an object with role "
                "and content"
            )
        cleaned = {k: v for k, v in message.items() if v is not None}
        role = cleaned.get("role")
        if role not in ROLES:
            what = "has no role" if role is None else f"has the unknown role {role!r}"
            raise RowProblem(f"message {position} {what}; use one of {', '.join(ROLES)}")
        content = cleaned.get("content")
        if content is not None and not isinstance(content, str):
            raise RowProblem(
                f"message {position} ({role}) has content of type {_type_name(content)}; "
                "content must be a string"
            )
        tool_call = role == "assistant" and bool(cleaned.get("tool_calls"))
        if role in _ROLES_NEEDING_CONTENT and not tool_call and not (content or "").strip():
            raise RowProblem(
                f"message {position} ({role}) has empty content; give it text or drop the message"
            )
        thinking = cleaned.get("thinking")
        if thinking is not None and not isinstance(thinking, str):
            raise RowProblem(
                f"message {position} ({role}) has thinking of type {_type_name(thinking)}; "
                "thinking must be a string or null"
            )
        messages.append(cleaned)
    return messages


def clean_text(value: Any, column: str) -> str:
    """A ``format: custom`` row's training text. Raises RowProblem."""
    if not isinstance(value, str):
        raise RowProblem(
            f"column {column!r} holds a {_type_name(value)}, not training text (a string)"
        )
    if not value.strip():
        raise RowProblem(f"column {column!r} is empty; give the row its training text")
    return value
