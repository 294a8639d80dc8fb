"""Where the assistant's text is in a harmony chat, and how spans become token masks."""

from __future__ import annotations

from finetune_trainer.data.harmony import (
    assistant_turn_spans,
    final_answer_spans,
    looks_like_harmony,
    parse_messages,
)
from finetune_trainer.data.masks import loss_spans, token_mask

SYSTEM = "<|start|>system<|message|>S<|end|>"
USER = "<|start|>user<|message|>Q?<|end|>"
ANALYSIS = "<|start|>assistant<|channel|>analysis<|message|>think<|end|>"
FINAL = "<|start|>assistant<|channel|>final<|message|>answer<|return|>"


def _cut(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[a:b] for a, b in spans]


def test_parse_messages_reads_roles_and_channels() -> None:
    text = SYSTEM + USER + ANALYSIS + FINAL
    parsed = parse_messages(text)
    assert [(m.role, m.channel) for m in parsed] == [
        ("system", None),
        ("user", None),
        ("assistant", "analysis"),
        ("assistant", "final"),
    ]
    assert text[parsed[3].content_start : parsed[3].content_end] == "answer"
    assert looks_like_harmony(text)
    assert not looks_like_harmony("<|im_start|>user\nhi<|im_end|>")


def test_assistant_turn_is_everything_after_the_generation_prompt() -> None:
    text = SYSTEM + USER + ANALYSIS + FINAL
    assert _cut(text, assistant_turn_spans(text)) == [
        "<|channel|>analysis<|message|>think<|end|>"
        "<|start|>assistant<|channel|>final<|message|>answer<|return|>"
    ]


def test_each_turn_of_a_multi_turn_chat_is_its_own_span() -> None:
    earlier = "<|start|>assistant<|channel|>final<|message|>first<|end|>"
    text = SYSTEM + USER + earlier + USER + ANALYSIS + FINAL
    assert _cut(text, assistant_turn_spans(text)) == [
        "<|channel|>final<|message|>first<|end|>",
        "<|channel|>analysis<|message|>think<|end|>"
        "<|start|>assistant<|channel|>final<|message|>answer<|return|>",
    ]
    assert _cut(text, final_answer_spans(text)) == ["first<|end|>", "answer<|return|>"]


def test_a_tool_call_is_trained_from_its_recipient_on() -> None:
    call = "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>"
    result = "<|start|>functions.f to=assistant<|channel|>commentary<|message|>1<|end|>"
    text = SYSTEM + USER + call + result + FINAL
    assert _cut(text, assistant_turn_spans(text)) == [
        " to=functions.f<|channel|>commentary json<|message|>{}<|call|>",
        "<|channel|>final<|message|>answer<|return|>",
    ]
    assert _cut(text, final_answer_spans(text)) == ["answer<|return|>"]


def test_train_on_all_is_the_whole_text() -> None:
    assert loss_spans("abc", "all") == [(0, 3)]


def test_non_harmony_text_locates_answers_and_their_closing_token() -> None:
    text = (
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<think>why</think>"
        "hi there<|im_end|>\n"
    )
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there", "thinking": "why"},
    ]
    markers = ["<|im_end|>", "<|im_start|>"]
    final = loss_spans(text, "final", messages=messages, closing_markers=markers)
    assert _cut(text, final) == ["hi there<|im_end|>"]
    whole = loss_spans(text, "assistant", messages=messages, closing_markers=markers)
    assert _cut(text, whole) == ["why</think>hi there<|im_end|>"]


def test_non_harmony_answer_equal_to_the_question_is_found_after_it() -> None:
    text = "U: same\nA: same</s>"
    messages = [{"role": "user", "content": "same"}, {"role": "assistant", "content": "same"}]
    spans = loss_spans(text, "final", messages=messages, closing_markers=["</s>"])
    assert _cut(text, spans) == ["same</s>"]


def test_token_mask_marks_tokens_overlapping_a_span() -> None:
    offsets = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 8)]
    assert token_mask(offsets, [(2, 6)]) == [0, 1, 1, 0, 0]
    # A token straddling the span's edge carries loss; a zero-width token inside does too.
    assert token_mask(offsets, [(3, 5), (8, 9)]) == [0, 1, 1, 0, 1]
    assert token_mask(offsets, []) == [0, 0, 0, 0, 0]


def test_closing_token_after_whitespace_is_trained() -> None:
    # Llama-2 style: "[/INST] answer </s>"
    text = "<s>[INST] q [/INST] answer </s>"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]
    spans = loss_spans(text, "final", messages=messages, closing_markers=["</s>"])
    assert _cut(text, spans) == ["answer </s>"]
