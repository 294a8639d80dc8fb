"""Which tokens carry loss: spans of the rendered text mapped onto tokens.

The spans come from the rendered text itself, not from re-rendering partial chats: gpt-oss's
template renders an assistant answer differently depending on whether it is the last one,
so prefix tricks break on it. For harmony text the markers give exact spans; for any other
chat template the assistant messages' contents are located in the text, in order, together
with the special token that closes each of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from .harmony import assistant_turn_spans, final_answer_spans, looks_like_harmony

TrainOn = Literal["assistant", "final", "all"]
Span = tuple[int, int]


def _locate(text: str, needle: str, start: int) -> tuple[int, int] | None:
    for candidate in (needle, needle.strip()):
        if candidate:
            found = text.find(candidate, start)
            if found >= 0:
                return found, found + len(candidate)
    return None


def _closing_marker_end(text: str, end: int, markers: Sequence[str]) -> int:
    """Extend a content span over the special token that closes the message, if one follows
    it, after whitespace at most (``<|im_end|>``, ``<|eot_id|>``, `` </s>``...)."""
    after = end + len(text[end:]) - len(text[end:].lstrip())
    for marker in markers:
        if marker and text.startswith(marker, after):
            return after + len(marker)
    return end


def located_spans(
    text: str,
    messages: Sequence[Mapping[str, Any]],
    train_on: TrainOn,
    closing_markers: Iterable[str],
) -> list[Span]:
    """Spans of assistant answers (and, for ``assistant``, their reasoning) found in text
    rendered by a non-harmony chat template."""
    markers = sorted({m for m in closing_markers if m}, key=len, reverse=True)
    spans: list[Span] = []
    cursor = 0
    for message in messages:
        content = message.get("content") or ""
        if message.get("role") != "assistant":
            where = _locate(text, content, cursor) if content else None
            if where is not None:
                cursor = where[1]
            continue
        where = _locate(text, content, cursor) if content else None
        if where is None:
            continue
        start, end = where
        thinking = message.get("thinking")
        if train_on == "assistant" and thinking:
            found = _locate(text, thinking, cursor)
            if found is not None and found[0] < start:
                start = found[0]
        end = _closing_marker_end(text, end, markers)
        spans.append((start, end))
        cursor = end
    return spans


def loss_spans(
    text: str,
    train_on: TrainOn,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    closing_markers: Iterable[str] = (),
) -> list[Span]:
    """Character spans of ``text`` that carry loss under ``train_on``."""
    if train_on == "all":
        return [(0, len(text))]
    if looks_like_harmony(text):
        return assistant_turn_spans(text) if train_on == "assistant" else final_answer_spans(text)
    if messages is None:
        return []
    return located_spans(text, messages, train_on, closing_markers)


def token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[int]:
    """1 for each token whose characters overlap a span, else 0. ``offsets`` is the fast
    tokenizer's offset mapping; ``spans`` are sorted and do not overlap."""
    mask = []
    index = 0
    for start, end in offsets:
        end = max(end, start + 1)  # a zero-width token still sits at its start position
        while index < len(spans) and spans[index][1] <= start:
            index += 1
        inside = index < len(spans) and spans[index][0] < end
        mask.append(1 if inside else 0)
    return mask
