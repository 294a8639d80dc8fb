"""Row checks: each broken row gets a message that names the problem and the fix."""

from __future__ import annotations

import pytest

from finetune_trainer.data.rows import RowProblem, clean_messages, clean_text


def test_clean_messages_drops_null_fields() -> None:
    value = [
        {"role": "user", "content": "hi", "thinking": None},
        {"role": "assistant", "content": "hello", "thinking": "short"},
    ]
    assert clean_messages(value, "messages") == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "thinking": "short"},
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "column 'messages' is null; give a list of chat messages"),
        ("hi", "holds a str, not a list of chat messages"),
        ([], "empty conversation; give at least a user and an assistant message"),
        (["hi"], "message 0 is a str, not an object with role and content"),
        ([{"content": "x"}], "message 0 has no role; use one of system, developer, user"),
        (
            [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}],
            "message 1 has the unknown role 'robot'; use one of system, developer, user, "
            "assistant, tool",
        ),
        ([{"role": "user", "content": 3}], "message 0 (user) has content of type int"),
        ([{"role": "user", "content": "  "}], "message 0 (user) has empty content"),
        (
            [{"role": "assistant", "content": "a", "thinking": ["x"]}],
            "thinking of type list; thinking must be a string or null",
        ),
    ],
)
def test_bad_messages_say_what_to_fix(value: object, expected: str) -> None:
    with pytest.raises(RowProblem) as caught:
        clean_messages(value, "messages")
    assert expected in str(caught.value)


def test_a_tool_call_may_have_no_content() -> None:
    call = {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    assert clean_messages([{"role": "user", "content": "q"}, call], "messages")[1] == call


def test_empty_system_content_is_allowed() -> None:
    value = [{"role": "system", "content": ""}, {"role": "user", "content": "q"}]
    assert len(clean_messages(value, "messages")) == 2


def test_clean_text() -> None:
    assert clean_text("abc", "text") == "abc"
    with pytest.raises(RowProblem, match="holds a null, not training text"):
        clean_text(None, "text")
    with pytest.raises(RowProblem, match="column 'text' is empty"):
        clean_text("   ", "text")
