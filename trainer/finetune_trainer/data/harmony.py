"""The harmony chat format of gpt-oss: its markers, and where the assistant's text is.

A harmony chat is a sequence of messages, each
``<|start|>{role}[ to=...]<|channel|>{channel}[ ...]<|message|>{content}{terminator}``
where the terminator is ``<|end|>``, ``<|return|>`` (the last answer of a conversation) or
``<|call|>`` (a tool call). The spans found here are character ranges in the rendered text;
the mask builder maps them onto tokens through the fast tokenizer's offset mapping, so the
same code works for the real gpt-oss tokenizer and the project's tiny test tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

_MESSAGE_RE = re.compile(
    re.escape(START)
    + r"(?P<header>.*?)"
    + re.escape(MESSAGE)
    + r"(?P<content>.*?)"
    + r"(?P<terminator>"
    + "|".join(re.escape(t) for t in TERMINATORS)
    + r")",
    re.DOTALL,
)


@dataclass(frozen=True)
class HarmonyMessage:
    """One rendered message, as character offsets into the rendered text."""

    role: str
    channel: str | None
    start: int  # offset of <|start|>
    role_end: int  # offset just after the role word (where the model starts generating)
    content_start: int
    content_end: int
    end: int  # offset just after the terminator


def looks_like_harmony(text: str) -> bool:
    """True when ``text`` is a harmony-formatted chat."""
    return START in text and MESSAGE in text and any(t in text for t in TERMINATORS)


def parse_messages(text: str) -> list[HarmonyMessage]:
    """Every complete message in a rendered harmony chat, in order."""
    messages = []
    for match in _MESSAGE_RE.finditer(text):
        header = match.group("header")
        role = re.split(r"[ <]", header, maxsplit=1)[0]
        channel = None
        if CHANNEL in header:
            channel = header.split(CHANNEL, 1)[1].split(" ", 1)[0].split("<", 1)[0]
        messages.append(
            HarmonyMessage(
                role=role,
                channel=channel,
                start=match.start(),
                role_end=match.start() + len(START) + len(role),
                content_start=match.start("content"),
                content_end=match.end("content"),
                end=match.end(),
            )
        )
    return messages


def assistant_turn_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every assistant turn: what the model generates after the prompt's
    ``<|start|>assistant``. A turn is a run of adjacent assistant messages (analysis, then
    final or a tool call); it is trained from just after the first message's role to the
    last message's terminator, so the headers of the later messages in the turn, which the
    model writes itself, are trained too."""
    spans: list[tuple[int, int]] = []
    previous_end = -1
    for message in parse_messages(text):
        if message.role != "assistant":
            previous_end = -1
            continue
        if spans and message.start == previous_end:
            spans[-1] = (spans[-1][0], message.end)
        else:
            spans.append((message.role_end, message.end))
        previous_end = message.end
    return spans


def final_answer_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every assistant final-channel answer: its content and its
    terminator (``<|return|>`` for the last answer, ``<|end|>`` for earlier ones)."""
    return [
        (message.content_start, message.end)
        for message in parse_messages(text)
        if message.role == "assistant" and message.channel == "final"
    ]
