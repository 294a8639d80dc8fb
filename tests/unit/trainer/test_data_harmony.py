"""Where the assistant's text is in a harmony chat (read from token ids), where it is in a
chat of another template (from where the rendering put each message's text), and how spans
become token masks."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_trainer.data.harmony import (
    HarmonyIds,
    assistant_turn_spans,
    final_answer_spans,
    parse_messages,
)
from finetune_trainer.data.masks import check_untrained, field_spans, loss_spans, token_mask
from finetune_trainer.data.render import RenderedChat, TextField
from finetune_trainer.data.rows import RowProblem

SYSTEM = "<|start|>system<|message|>S<|end|>"
USER = "<|start|>user<|message|>Q?<|end|>"
ANALYSIS = "<|start|>assistant<|channel|>analysis<|message|>think<|end|>"
FINAL = "<|start|>assistant<|channel|>final<|message|>answer<|return|>"


def _cut(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[a:b] for a, b in spans]


@pytest.fixture(scope="module")
def parse(tiny_tokenizer: Any) -> Any:
    marks = HarmonyIds.of(tiny_tokenizer)
    assert marks is not None

    def run(text: str, *, split_special_tokens: bool = False) -> list[Any]:
        encoded = tiny_tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=split_special_tokens,
        )
        return parse_messages(text, encoded["input_ids"], encoded["offset_mapping"], marks)

    return run


def test_parse_messages_reads_roles_and_channels(parse: Any) -> None:
    text = SYSTEM + USER + ANALYSIS + FINAL
    parsed = parse(text)
    assert [(m.role, m.channel) for m in parsed] == [
        ("system", None),
        ("user", None),
        ("assistant", "analysis"),
        ("assistant", "final"),
    ]
    assert text[parsed[3].content_start : parsed[3].content_end] == "answer"


def test_markers_spelled_as_text_are_no_boundary(parse: Any) -> None:
    """The same characters, tokenized as plain text (as escaped dataset text is), hold no
    message at all: only special token ids delimit messages."""
    assert parse(SYSTEM + USER + FINAL, split_special_tokens=True) == []


def test_a_tokenizer_without_harmony_markers_is_not_harmony(tiny_tokenizer: Any) -> None:
    class Plain:
        added_tokens_decoder: dict[int, Any] = {}

    assert HarmonyIds.of(Plain()) is None
    marks = HarmonyIds.of(tiny_tokenizer)
    assert marks is not None
    assert not marks.present(tiny_tokenizer.encode("<|im_start|>user\nhi<|im_end|>"))


def test_assistant_turn_is_everything_after_the_generation_prompt(parse: Any) -> None:
    text = SYSTEM + USER + ANALYSIS + FINAL
    assert _cut(text, assistant_turn_spans(parse(text))) == [
        "<|channel|>analysis<|message|>think<|end|>"
        "<|start|>assistant<|channel|>final<|message|>answer<|return|>"
    ]


def test_each_turn_of_a_multi_turn_chat_is_its_own_span(parse: Any) -> None:
    earlier = "<|start|>assistant<|channel|>final<|message|>first<|end|>"
    text = SYSTEM + USER + earlier + USER + ANALYSIS + FINAL
    messages = parse(text)
    assert _cut(text, assistant_turn_spans(messages)) == [
        "<|channel|>final<|message|>first<|end|>",
        "<|channel|>analysis<|message|>think<|end|>"
        "<|start|>assistant<|channel|>final<|message|>answer<|return|>",
    ]
    assert _cut(text, final_answer_spans(messages)) == ["first<|end|>", "answer<|return|>"]


def test_a_tool_call_is_trained_from_its_recipient_on(parse: Any) -> None:
    call = "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>"
    result = "<|start|>functions.f to=assistant<|channel|>commentary<|message|>1<|end|>"
    text = SYSTEM + USER + call + result + FINAL
    messages = parse(text)
    assert [(m.role, m.channel) for m in messages][2:] == [
        ("assistant", "commentary"),
        ("functions.f", "commentary"),
        ("assistant", "final"),
    ]
    assert _cut(text, assistant_turn_spans(messages)) == [
        " to=functions.f<|channel|>commentary json<|message|>{}<|call|>",
        "<|channel|>final<|message|>answer<|return|>",
    ]
    assert _cut(text, final_answer_spans(messages)) == ["answer<|return|>"]


def test_a_constrained_channel_is_read_up_to_its_marker(parse: Any) -> None:
    call = (
        "<|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>"
        "{}<|call|>"
    )
    assert [(m.role, m.channel) for m in parse(SYSTEM + call)][1] == ("assistant", "commentary")


def test_train_on_all_is_the_whole_text() -> None:
    assert loss_spans(RenderedChat("abc"), [1, 2, 3], [(0, 1), (1, 2), (2, 3)], "all") == [(0, 3)]


def _chat(text: str, *fields: tuple[int, str, str, str]) -> RenderedChat:
    """A rendered chat with the text fields given as (message, role, name, value), each
    found after the previous one."""
    located, cursor = [], 0
    for message, role, name, value in fields:
        start = text.index(value, cursor)
        located.append(TextField(message, role, name, start, start + len(value)))
        cursor = start + len(value)
    return RenderedChat(text, tuple(located))


def test_non_harmony_answers_end_at_their_closing_token() -> None:
    text = (
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<think>why</think>"
        "hi there<|im_end|>\n"
    )
    chat = _chat(
        text,
        (0, "user", "content", "hello"),
        (1, "assistant", "thinking", "why"),
        (1, "assistant", "content", "hi there"),
    )
    markers = ["<|im_end|>", "<|im_start|>"]
    assert _cut(text, field_spans(chat, "final", markers)) == ["hi there<|im_end|>"]
    assert _cut(text, field_spans(chat, "assistant", markers)) == ["why</think>hi there<|im_end|>"]


def test_non_harmony_answer_equal_to_the_question_is_its_own() -> None:
    text = "U: same\nA: same</s>"
    chat = _chat(text, (0, "user", "content", "same"), (1, "assistant", "content", "same"))
    assert field_spans(chat, "final", ["</s>"]) == [(11, 19)]


def test_non_harmony_closing_token_after_whitespace_is_trained() -> None:
    # Llama-2 style: "[/INST] answer </s>"
    text = "<s>[INST] q [/INST] answer </s>"
    chat = _chat(text, (0, "user", "content", "q"), (1, "assistant", "content", "answer"))
    assert _cut(text, field_spans(chat, "final", ["</s>"])) == ["answer </s>"]


def test_a_closing_token_must_be_the_template_s_own() -> None:
    """A marker-looking string at the start of the next message's text closes nothing."""
    text = "A: answer</s>"
    chat = _chat(text, (0, "assistant", "content", "answer"), (1, "user", "content", "</s>"))
    assert _cut(text, field_spans(chat, "final", ["</s>"])) == ["answer"]


def test_token_mask_marks_tokens_overlapping_a_span() -> None:
    offsets = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 8)]
    assert token_mask(offsets, [(2, 6)]) == [0, 1, 1, 0, 0]
    # A token straddling the span's edge carries loss; a zero-width token inside does too.
    assert token_mask(offsets, [(3, 5), (8, 9)]) == [0, 1, 1, 0, 1]
    assert token_mask(offsets, []) == [0, 0, 0, 0, 0]


def test_user_text_that_would_carry_loss_is_refused() -> None:
    text = "A: hi U: question"
    chat = _chat(text, (0, "assistant", "content", "hi"), (1, "user", "content", "question"))
    offsets = [(0, 3), (3, 5), (5, 9), (9, 17)]
    check_untrained(chat, offsets, [0, 1, 0, 0])
    with pytest.raises(RowProblem, match=r"message 1 \(user\) content would carry loss"):
        check_untrained(chat, offsets, [0, 1, 0, 1])
