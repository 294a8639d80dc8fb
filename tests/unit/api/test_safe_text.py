"""Text from outside the operator, bounded and without terminal escapes."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from finetune_api.safe_text import safe_text


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


BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
INVISIBLE = [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x180E, 0xE0041]
SEPARATORS = [0x2028, 0x2029]


@pytest.mark.parametrize("code", BIDI + INVISIBLE + SEPARATORS, ids=lambda c: f"U+{c:04X}")
def test_characters_that_change_what_a_reader_sees_are_escaped(code: int) -> None:
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    if code > 0xFFFF:
        escape = f"\\U{code:08x}"
    assert safe_text(f"a{chr(code)}b") == f"a{escape}b"


def test_a_reversed_name_reads_as_written() -> None:
    # "exe.txt" shown as "txt.exe": the override is in plain sight instead.
    assert safe_text("report\u202etxt.exe") == "report\\u202etxt.exe"
    assert safe_text("s3://bucket\u2066/other\u2069") == "s3://bucket\\u2066/other\\u2069"


def test_every_format_character_and_separator_is_escaped() -> None:
    # Unicode's format characters (Cf), line and paragraph separators (Zl, Zp), controls
    # (Cc) and surrogates (Cs), as this Python knows them: none stays as it is, except
    # the newline and tab.
    hidden = [
        chr(code)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in {"Cf", "Zl", "Zp", "Cc", "Cs"}
    ]
    kept = [c for c in hidden if c in safe_text(c)]
    assert kept == ["\t", "\n"]


def test_text_people_write_is_left_as_it_is() -> None:
    text = "loss 1.5 ≤ 2; données: Ünïcödé, 日本語, العربية, עברית, emoji 🚀, tab\there\nline"
    assert safe_text(text) == text


def test_an_unpaired_surrogate_is_escaped() -> None:
    escaped = safe_text("bad \ud800 half")
    assert escaped == "bad \\ud800 half"
    escaped.encode("utf-8")  # a log handler can write it
