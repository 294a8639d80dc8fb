"""Tokenize rendered chats so that dataset text never becomes a special token.

A fast tokenizer matches special token strings anywhere in its input. Rows are tokenized
as a whole first (exactly what the model sees at inference); then any special token that
overlaps a message's text (one the text spells out, or one it forms together with the
template text beside it) is either refused (``dataset.specialTokensInContent: error``) or
the row is tokenized again with only the template's own special tokens taken as such
(``escape``): the text between them goes through the tokenizer with its special-token
matching off, so ``<|start|>`` typed by a user becomes the ordinary tokens of that string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .render import RenderedChat, TextField
from .rows import RowProblem
from .special_tokens import SpecialTokens

Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    offsets: Offsets


def special_token_in_text(
    chat: RenderedChat, encoded: Encoded, special: SpecialTokens
) -> tuple[TextField, str] | None:
    """The first message text that a special token overlaps, with the token's string."""
    special_ids = special.id_set
    for token, (start, end) in zip(encoded.input_ids, encoded.offsets, strict=True):
        if token not in special_ids:
            continue
        for field in chat.fields:
            if field.start < max(end, start + 1) and start < field.end:
                return field, chat.text[start:end]
    return None


def refusal(field: TextField, token: str) -> RowProblem:
    """Why a row whose text makes a special token is refused."""
    return RowProblem(
        f"message {field.message} ({field.role}) {field.name} contains the special token "
        f"{token!r} (or forms it with the chat template's text around it), which the "
        "tokenizer would read as chat structure (it could forge a turn); remove it, or set "
        "dataset.specialTokensInContent: escape to train on it as plain text"
    )


def encode_escaped(tokenizer: Any, chat: RenderedChat, special: SpecialTokens) -> Encoded:
    """Tokenize ``chat`` taking as special tokens only those the template wrote (outside
    every message text); all other text, message text included, with special-token
    matching off."""
    text = chat.text
    outside: list[tuple[int, int]] = []
    cursor = 0
    for field in sorted(chat.fields, key=lambda f: f.start):
        if field.start > cursor:
            outside.append((cursor, field.start))
        cursor = max(cursor, field.end)
    if cursor < len(text):
        outside.append((cursor, len(text)))
    markers = [span for start, end in outside for span in special.spans(text, start, end)]
    # The text between the template's special tokens, tokenized in one batch.
    stretches: list[tuple[int, int]] = []
    cursor = 0
    for start, end in markers:
        if start > cursor:
            stretches.append((cursor, start))
        cursor = end
    if cursor < len(text):
        stretches.append((cursor, len(text)))
    batch = (
        tokenizer(
            [text[a:b] for a, b in stretches],
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=True,
        )
        if stretches
        else {"input_ids": [], "offset_mapping": []}
    )
    pieces: list[tuple[int, Sequence[int], Sequence[tuple[int, int]]]] = [
        (a, ids, offsets)
        for (a, _), ids, offsets in zip(
            stretches, batch["input_ids"], batch["offset_mapping"], strict=True
        )
    ]
    pieces += [(a, [special.ids[text[a:b]]], [(0, b - a)]) for a, b in markers]
    ids: list[int] = []
    spans: Offsets = []
    for base, piece_ids, piece_offsets in sorted(pieces, key=lambda p: p[0]):
        ids.extend(piece_ids)
        spans.extend((base + s, base + e) for s, e in piece_offsets)
    encoded = Encoded(ids, spans)
    left = special_token_in_text(chat, encoded, special)
    if left is not None:  # the tokenizer matched one anyway: never train on it
        raise refusal(*left)
    return encoded
