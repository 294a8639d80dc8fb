"""Which tokens carry loss, from where each message is, never from searching the text.

- ``all``: every token.
- A harmony chat (gpt-oss): the messages are read from the token ids (``harmony.py``),
  where a boundary is a special token the chat template wrote: dataset text never becomes
  one (``encode.py``), so no text can open or close a message.
- Any other chat template: each assistant message's text is where the rendering put it
  (``render.py``), extended over the special token that closes it in the template's text
  (``<|im_end|>``, ``<|eot_id|>``, `` </s>``...).

Whatever the template, a token of a non-assistant message's text never carries loss: a row
where one would is refused (:func:`check_untrained`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Literal

from .harmony import HarmonyIds, assistant_turn_spans, final_answer_spans, parse_messages
from .render import RenderedChat, TextField
from .rows import RowProblem

TrainOn = Literal["assistant", "final", "all"]
Span = tuple[int, int]
Offsets = Sequence[tuple[int, int]]


def _closing_marker_end(text: str, end: int, limit: int, markers: Sequence[str]) -> int:
    """Extend a text span ending at ``end`` over the special token that closes the
    message, if one follows it in the template's text (before ``limit``, where the next
    message text starts), after whitespace at most."""
    gap = text[end:limit]
    after = end + len(gap) - len(gap.lstrip())
    for marker in markers:
        if marker and text.startswith(marker, after) and after + len(marker) <= limit:
            return after + len(marker)
    return end


def field_spans(
    chat: RenderedChat, train_on: TrainOn, closing_markers: Iterable[str]
) -> list[Span]:
    """Spans of assistant answers (and, for ``assistant``, the reasoning rendered before
    them) in a chat rendered by a non-harmony template."""
    markers = sorted({m for m in closing_markers if m}, key=len, reverse=True)
    fields = sorted(chat.fields, key=lambda f: f.start)
    spans: list[Span] = []
    for position, field in enumerate(fields):
        if field.role != "assistant" or field.name != "content":
            continue
        start = field.start
        if train_on == "assistant":
            floor = spans[-1][1] if spans else 0
            for earlier in fields[:position]:
                if (
                    earlier.message == field.message
                    and earlier.name == "thinking"
                    and earlier.start >= floor
                ):
                    start = min(start, earlier.start)
        limit = fields[position + 1].start if position + 1 < len(fields) else len(chat.text)
        spans.append((start, _closing_marker_end(chat.text, field.end, limit, markers)))
    return spans


def loss_spans(
    chat: RenderedChat,
    ids: Sequence[int],
    offsets: Offsets,
    train_on: TrainOn,
    *,
    harmony: HarmonyIds | None = None,
    closing_markers: Iterable[str] = (),
) -> list[Span]:
    """Character spans of ``chat.text`` that carry loss under ``train_on``."""
    if train_on == "all":
        return [(0, len(chat.text))]
    if harmony is not None and harmony.present(ids):
        messages = parse_messages(chat.text, ids, offsets, harmony)
        if train_on == "assistant":
            return assistant_turn_spans(messages)
        return final_answer_spans(messages)
    if not chat.fields:
        return []
    return field_spans(chat, train_on, closing_markers)


def token_mask(offsets: Offsets, spans: Sequence[Span]) -> list[int]:
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


def check_untrained(chat: RenderedChat, offsets: Offsets, mask: Sequence[int]) -> None:
    """Raise RowProblem when a token of a non-assistant message's text carries loss: the
    model would learn user (system, tool) text as its own answer."""
    starts = [start for start, _ in offsets]
    for field in chat.fields:
        if field.role == "assistant":
            continue
        first = max(0, bisect_left(starts, field.start) - 1)
        for index in range(first, len(offsets)):
            start, end = offsets[index]
            if start >= field.end:
                break
            if mask[index] and max(end, start + 1) > field.start:
                raise RowProblem(_trained_user_text(field))


def _trained_user_text(field: TextField) -> str:
    return (
        f"message {field.message} ({field.role}) {field.name} would carry loss: the chat "
        "template renders it inside what reads as an assistant turn, so the model would "
        "learn it as its own answer; fix the row (or the template)"
    )
