"""A tokenizer's special tokens, found in text the way the tokenizer would find them.

A fast tokenizer turns every occurrence of a special token's string into that token's id
wherever it appears, dataset text included: ``<|start|>`` typed into a user message would
become the same id the chat template writes to open a message. This module names those
strings, so dataset text holding one can be refused or tokenized as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, leftmost-longest, as a character trie: at each
    position the engine follows one branch per character instead of trying every word
    (gpt-oss's tokenizer has over a thousand reserved special tokens)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        ends_here = "" in node
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # A word may end here: the longer ones are optional, and preferred (greedy).
        return f"(?:{body})?" if ends_here else body

    return build(trie)


@dataclass(frozen=True)
class SpecialTokens:
    """The strings and ids of a tokenizer's special tokens."""

    ids: dict[str, int]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokens:
        """Every special token: the named ones (bos, eos, pad...) and every added token
        marked special (gpt-oss's harmony markers and reserved tokens)."""
        strings = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
        decoder = getattr(tokenizer, "added_tokens_decoder", {})
        strings |= {str(t) for t in decoder.values() if getattr(t, "special", False)}
        strings.discard("")
        ids = {s: int(tokenizer.convert_tokens_to_ids(s)) for s in sorted(strings)}
        pattern = re.compile(_trie_pattern(ids)) if ids else None
        return cls(ids=ids, pattern=pattern)

    @property
    def id_set(self) -> frozenset[int]:
        return frozenset(self.ids.values())

    def first_in(self, text: str) -> str | None:
        """The first special token string in ``text``, or None."""
        if self.pattern is None:
            return None
        found = self.pattern.search(text)
        return found.group() if found else None

    def spans(self, text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Where special token strings are in ``text[start:end]``, left to right, each
        the longest one starting at its position, as the tokenizer matches them."""
        if self.pattern is None:
            return
        for found in self.pattern.finditer(text, start, end):
            if found.end() > found.start():
                yield found.start(), found.end()
