"""Render a chat through the model's chat template, knowing where each message's text is.

The template writes the structure (roles, channels, markers); the dataset writes the text
of each message (content, thinking, tool names and arguments). Training must never take
one for the other, so the chat is rendered twice: once as it is, and once with every such
text replaced by a unique placeholder. The placeholders show exactly where the template put
each message's text, and the two renderings are aligned to find its characters in the real
one. The template's own text lies between them.

Alignment follows the template's usual ways of writing a text: as it is, stripped (of
whitespace or of newlines, on either or both sides) or as a JSON string (gpt-oss writes
tool output with ``tojson``). A template that does anything else with the text (branches
on what it contains, changes its case) makes the two renderings disagree: the row is then
refused, since its text could not be told from the template's.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .rows import RowProblem
from .special_tokens import SpecialTokens

Path = tuple[str | int, ...]

# How many alternative alignments are followed at once; real templates need one.
_MAX_ALIGNMENTS = 8
_TRANSFORMS: tuple[Callable[[str], str], ...] = (
    lambda v: v,
    lambda v: v.strip(),
    lambda v: v.lstrip(),
    lambda v: v.rstrip(),
    lambda v: v.strip("\n"),
    lambda v: v.lstrip("\n"),
    lambda v: v.rstrip("\n"),
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    lambda v: json.dumps(v)[1:-1],
)


@dataclass(frozen=True)
class TextField:
    """Where one message's text is in the rendered chat (characters ``start:end``)."""

    message: int
    role: str
    name: str  # content, thinking, name, tool_calls[0].function.arguments, ...
    start: int
    end: int


@dataclass(frozen=True)
class RenderedChat:
    """A rendered row: its text and, for chats, where each message's text lies in it.
    Everything outside ``fields`` was written by the chat template (or is ready-made
    ``format: custom`` text, which has no fields)."""

    text: str
    fields: tuple[TextField, ...] = ()


def field_label(path: Path) -> str:
    """('tool_calls', 0, 'function', 'name') -> 'tool_calls[0].function.name'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def tracked_paths(message: Mapping[str, Any]) -> list[Path]:
    """The message's own text, which is located in the rendering and may be escaped:
    content and thinking; a tool result's name; an assistant's tool call names and
    arguments (a string, or each string value of a JSON object)."""
    paths: list[Path] = [
        (key,) for key in ("content", "thinking") if isinstance(message.get(key), str)
    ]
    role = message.get("role")
    if role == "tool" and isinstance(message.get("name"), str):
        paths.append(("name",))
    calls = message.get("tool_calls")
    if role == "assistant" and isinstance(calls, list):
        for index, call in enumerate(calls):
            if not isinstance(call, Mapping):
                continue
            function = call.get("function")
            base: Path = ("tool_calls", index)
            target = call
            if isinstance(function, Mapping):
                base, target = (*base, "function"), function
            if isinstance(target.get("name"), str):
                paths.append((*base, "name"))
            arguments = target.get("arguments")
            if isinstance(arguments, str):
                paths.append((*base, "arguments"))
            elif isinstance(arguments, Mapping | list):
                # Written as JSON by templates: each string value is text of its own.
                paths.extend(
                    path
                    for path, _ in string_leaves(arguments, (*base, "arguments"))
                    if "<key>" not in path
                )
    return paths


def string_leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string in a message (keys included), with its path; iterative, so no row can
    make it recurse."""
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if isinstance(key, str):
                    yield (*where, "<key>"), key
                stack.append(((*where, str(key)), child))
        elif isinstance(item, list | tuple):
            stack.extend(((*where, i), child) for i, child in enumerate(item))


def _get(message: Any, path: Path) -> Any:
    for part in path:
        message = message[part]
    return message


def _set(message: Any, path: Path, value: str) -> None:
    for part in path[:-1]:
        message = message[part]
    message[path[-1]] = value


def special_token_problem(
    messages: Sequence[Mapping[str, Any]], special: SpecialTokens, *, escape: bool
) -> str | None:
    """Why the messages cannot be trained on as they are, or None. Without ``escape`` no
    string may hold a special token; with it, only the tracked text may (it is then
    tokenized as plain text), since other strings are not located in the rendering."""
    for index, message in enumerate(messages):
        role = message.get("role")
        tracked = set(tracked_paths(message)) if escape else set()
        for path, value in string_leaves(message):
            token = special.first_in(value)
            if token is None or path in tracked:
                continue
            where = f"message {index} ({role}) {field_label(path)}"
            if escape:
                return (
                    f"{where} contains the special token {token!r}; dataset."
                    "specialTokensInContent: escape escapes message text (content, thinking, "
                    "tool names and arguments) only, so remove it from this field"
                )
            return (
                f"{where} contains the special token {token!r}, which the tokenizer would "
                "read as chat structure (it could forge a turn); remove it, or set "
                "dataset.specialTokensInContent: escape to train on it as plain text"
            )
    return None


class ChatRenderer:
    """Renders chats through a tokenizer's chat template, locating each message's text."""

    def __init__(self, tokenizer: Any, reasoning_effort: str) -> None:
        self.tokenizer = tokenizer
        self.reasoning_effort = reasoning_effort
        self._marker = f"FTOFIELD{secrets.token_hex(8)}N"
        self._marker_re = re.compile(re.escape(self._marker) + r"(\d+)E")

    def _apply(self, messages: Sequence[Mapping[str, Any]]) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages),
                tokenize=False,
                add_generation_prompt=False,
                reasoning_effort=self.reasoning_effort,
            )
        except Exception as err:  # the template's own checks (jinja2 errors) reject the row
            raise RowProblem(
                f"the model's chat template rejected the messages ({type(err).__name__}: "
                f"{err}); fix the messages so the template can render them"
            ) from err
        return str(text)

    def render(self, messages: Sequence[Mapping[str, Any]]) -> RenderedChat:
        text = self._apply(messages)
        placeholders = copy.deepcopy([dict(m) for m in messages])
        tracked: list[tuple[int, str, str, str]] = []  # message, role, field name, value
        for index, message in enumerate(messages):
            for path in tracked_paths(message):
                value = _get(message, path)
                if not value:  # an empty text: nothing to locate, and templates test it
                    continue
                _set(placeholders[index], path, f"{self._marker}{len(tracked)}E")
                tracked.append((index, str(message.get("role")), field_label(path), value))
        if not tracked:
            return RenderedChat(text)
        pieces = self._marker_re.split(self._apply(placeholders))
        literals, refs = pieces[0::2], [int(p) for p in pieces[1::2]]
        if any(ref >= len(tracked) for ref in refs):
            raise RowProblem(_UNFOLLOWABLE)
        spans = _align(text, literals, [tracked[ref][3] for ref in refs])
        fields = tuple(
            TextField(tracked[ref][0], tracked[ref][1], tracked[ref][2], start, end)
            for ref, (start, end) in zip(refs, spans, strict=True)
        )
        return RenderedChat(text, fields)


_UNFOLLOWABLE = (
    "the model's chat template changes the messages' text in a way the trainer cannot "
    "follow (it writes it neither as it is, stripped, nor as a JSON string, or it branches "
    "on what the text contains), so the text cannot be told apart from the template's "
    "markers; fix the row, or use a chat template that writes message text as it is"
)


def _align(text: str, literals: Sequence[str], values: Sequence[str]) -> list[tuple[int, int]]:
    """Where each value lies in ``text``, given that ``text`` is literals[0], the first
    value (transformed), literals[1], ... literals[-1]. Raises RowProblem when no choice of
    transforms rebuilds ``text``."""
    if not text.startswith(literals[0]):
        raise RowProblem(_UNFOLLOWABLE)
    # For each alignment still possible: its position in text after the i-th literal ->
    # where the i-th value lies; the value's start is the previous step's position.
    frontier: dict[int, tuple[int, int]] = {len(literals[0]): (0, 0)}
    steps: list[dict[int, tuple[int, int]]] = []
    for value, literal in zip(values, literals[1:], strict=True):
        following: dict[int, tuple[int, int]] = {}
        candidates = list(dict.fromkeys(transform(value) for transform in _TRANSFORMS))
        for position in frontier:
            for candidate in candidates:
                stop = position + len(candidate)
                after = stop + len(literal)
                if after in following or len(following) >= _MAX_ALIGNMENTS:
                    continue
                if text.startswith(candidate, position) and text.startswith(literal, stop):
                    following[after] = (position, stop)
        if not following:
            raise RowProblem(_UNFOLLOWABLE)
        steps.append(following)
        frontier = following
    if len(text) not in frontier:
        raise RowProblem(_UNFOLLOWABLE)
    spans: list[tuple[int, int]] = []
    position = len(text)
    for step in reversed(steps):
        start, stop = step[position]
        spans.append((start, stop))
        position = start
    spans.reverse()
    return spans
