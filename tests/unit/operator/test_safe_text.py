"""Text from outside the operator, bounded and without terminal escapes."""

from __future__ import annotations

import pytest

from finetune_operator.safe_text import safe_text


def test_control_characters_are_escaped_lines_kept() -> None:
    escaped = safe_text("a\x1b[31mred\x00\r\nnext\tcol\x9b")
    assert escaped == "a\\x1b[31mred\\x00\\x0d\nnext\tcol\\x9b"


@pytest.mark.parametrize("size", [10, 100, 4097, 42911, 10**6])
def test_never_longer_than_the_limit(size: int) -> None:
    text = safe_text("x" * size, 4096)
    assert len(text) <= 4096
    if size > 4096:
        kept = text.split(" [truncated ")[0]
        assert text == kept + f" [truncated {size - len(kept)} characters]"


def test_escaping_counts_against_the_limit() -> None:
    assert len(safe_text("\x00" * 5000, 1024)) <= 1024


def test_anything_becomes_text() -> None:
    assert safe_text(None) == "None" and safe_text(12) == "12"
