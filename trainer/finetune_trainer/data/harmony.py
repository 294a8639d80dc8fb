"""The harmony chat format of gpt-oss: its markers, and where each message is.

A harmony chat is a sequence of messages, each
``<|start|>{role}[ to=...]<|channel|>{channel}[ ...]<|message|>{content}{terminator}``
where the terminator is ``<|end|>``, ``<|return|>`` (the last answer of a conversation) or
``<|call|>`` (a tool call).

Messages are found in the token ids, never in the text: a marker is a message boundary only
where it is one special token id, and the trainer never lets dataset text become one (see
``encode.py``: such text is refused, or tokenized as plain text). A user message that
spells out ``<|start|>assistant<|channel|>final<|message|>...`` in its content is therefore
text inside the user message, not an assistant answer. The spans returned are character
ranges of the rendered text (from the tokens' offsets), which the mask builder maps back
onto tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

START = "<|start|>"
END = "<|end|>"
MESSAGE = "<|message|>"
CHANNEL = "<|channel|>"
RETURN = "<|return|>"
CALL = "<|call|>"
CONSTRAIN = "<|constrain|>"
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
TERMINATORS = (END, RETURN, CALL)

Offsets = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class HarmonyIds:
    """The token ids of a tokenizer's harmony markers, and of all its special tokens."""

    start: int
    message: int
    channel: int
    terminators: frozenset[int]
    special: frozenset[int]

    @classmethod
    def of(cls, tokenizer: Any) -> HarmonyIds | None:
        """The ids, or None when the tokenizer does not have every marker as a special
        token of its own (then its chats are not harmony)."""
        special = {
            str(token): index
            for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if getattr(token, "special", False)
        }
        needed = (START, MESSAGE, CHANNEL, *TERMINATORS)
        if any(marker not in special for marker in needed):
            return None
        return cls(
            start=special[START],
            message=special[MESSAGE],
            channel=special[CHANNEL],
            terminators=frozenset(special[t] for t in TERMINATORS),
            special=frozenset(special.values()),
        )

    def present(self, ids: Sequence[int]) -> bool:
        """True when ``ids`` hold harmony messages."""
        return self.start in ids and self.message in ids


@dataclass(frozen=True)
class HarmonyMessage:
    """One message, as character offsets into the rendered text."""

    role: str
    channel: str | None
    start: int  # offset of <|start|>
    role_end: int  # offset just after the role word (where the model starts generating)
    content_start: int
    content_end: int
    end: int  # offset just after the terminator


def _first_word(text: str) -> str:
    return text.split(" ", 1)[0]


def parse_messages(
    text: str, ids: Sequence[int], offsets: Offsets, marks: HarmonyIds
) -> list[HarmonyMessage]:
    """Every complete message (one that reached its terminator), in order. A ``<|start|>``
    before the open message's ``<|message|>`` restarts it; inside the content only a
    terminator ends the message. The role is the first word after ``<|start|>``, the
    channel the first word after ``<|channel|>``, each read up to the next special token."""
    messages: list[HarmonyMessage] = []
    opened: int | None = None  # token index of the open message's <|start|>
    channel_at: int | None = None  # ... of its <|channel|>
    header_end: int | None = None  # ... of its <|message|>
    for index, token in enumerate(ids):
        if header_end is None:
            if token == marks.start:
                opened, channel_at = index, None
            elif opened is None:
                continue
            elif token == marks.channel and channel_at is None:
                channel_at = index
            elif token == marks.message:
                header_end = index
            continue
        if token not in marks.terminators:
            continue
        assert opened is not None
        after_start = offsets[opened][1]
        role = _word_after(text, ids, offsets, opened, header_end, marks)
        channel = None
        if channel_at is not None:
            channel = _word_after(text, ids, offsets, channel_at, header_end, marks)
        messages.append(
            HarmonyMessage(
                role=role,
                channel=channel,
                start=offsets[opened][0],
                role_end=after_start + len(role),
                content_start=offsets[header_end][1],
                content_end=offsets[index][0],
                end=offsets[index][1],
            )
        )
        opened = channel_at = header_end = None
    return messages


def _word_after(
    text: str, ids: Sequence[int], offsets: Offsets, marker: int, header_end: int, marks: HarmonyIds
) -> str:
    """The first word of the header text after token ``marker``, up to the next special
    token (``<|channel|>``, ``<|constrain|>``, ``<|message|>``)."""
    stop = next(i for i in range(marker + 1, header_end + 1) if ids[i] in marks.special)
    return text[offsets[marker][1] : offsets[stop][0]].split(" ", 1)[0]


def assistant_turn_spans(messages: Sequence[HarmonyMessage]) -> list[tuple[int, int]]:
    """Character spans of every assistant turn: what the model generates after the prompt's
    ``<|start|>assistant``. A turn is a run of adjacent assistant messages (analysis, then
    final or a tool call); it is trained from just after the first message's role to the
    last message's terminator, so the headers of the later messages in the turn, which the
    model writes itself, are trained too."""
    spans: list[tuple[int, int]] = []
    previous_end = -1
    for message in messages:
        if message.role != "assistant":
            previous_end = -1
            continue
        if spans and message.start == previous_end:
            spans[-1] = (spans[-1][0], message.end)
        else:
            spans.append((message.role_end, message.end))
        previous_end = message.end
    return spans


def final_answer_spans(messages: Sequence[HarmonyMessage]) -> list[tuple[int, int]]:
    """Character spans of every assistant final-channel answer: its content and its
    terminator (``<|return|>`` for the last answer, ``<|end|>`` for earlier ones)."""
    return [
        (message.content_start, message.end)
        for message in messages
        if message.role == "assistant" and message.channel == "final"
    ]
