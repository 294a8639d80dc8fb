"""Refuse JSON nested deeper than any dataset needs, before a parser sees it.

The datasets library hands JSON to Arrow's reader, which recurses once per level: a row
nested 20,000 deep crashes it (a segfault in the process that reads it, which the Job
would retry forever). This scan is iterative and bounded: it reads the file in chunks,
jumps between the bytes that matter with a compiled pattern, and keeps only a counter, so
no input can make it recurse or hold more than one chunk.
"""

from __future__ import annotations

import re
from pathlib import Path

# A chat row is a list of messages holding objects (tool calls, their arguments) a few
# levels deep; 100 leaves room for any real data and none for a parser-crashing one.
MAX_JSON_DEPTH = 100
_CHUNK = 1 << 20

# Outside a string: brackets, a string's opening quote, a newline (for the line number).
_OUTSIDE = re.compile(rb'[\[\]{}"\n]')
# Inside a string: its closing quote, an escape, a newline (invalid there; ends the string).
_INSIDE = re.compile(rb'["\\\n]')
_OPEN, _CLOSE, _QUOTE, _NEWLINE = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\n")


class JsonTooDeep(ValueError):
    """Nesting over the limit; ``line`` is 1-based."""

    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"nests JSON deeper than {limit} levels at line {line}")
        self.line = line
        self.limit = limit


def check_json_depth(path: Path, limit: int = MAX_JSON_DEPTH, chunk_size: int = _CHUNK) -> None:
    """Raise JsonTooDeep at the first line where an array or object opens deeper than
    ``limit``. Works for JSON documents and JSON Lines alike (nesting is counted across
    lines, which a valid JSON Lines file returns to zero at the end of each); says nothing
    about other problems, which the parser reports."""
    depth = 0
    line = 1
    in_string = False
    skip_next = False  # an escape's backslash ended the previous chunk
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            pos, end = 0, len(chunk)
            if skip_next:
                skip_next = False
                if chunk[0] == _NEWLINE:
                    line += 1
                    in_string = False
                pos = 1
            while pos < end:
                found = (_INSIDE if in_string else _OUTSIDE).search(chunk, pos)
                if found is None:
                    break
                byte = chunk[found.start()]
                pos = found.end()
                if byte == _NEWLINE:
                    line += 1
                    in_string = False
                elif byte == _QUOTE:
                    in_string = not in_string
                elif in_string:  # a backslash: the next byte is escaped
                    if pos == end:
                        skip_next = True
                    elif chunk[pos] == _NEWLINE:
                        line += 1
                        in_string = False
                        pos += 1
                    else:
                        pos += 1
                elif byte in _OPEN:
                    depth += 1
                    if depth > limit:
                        raise JsonTooDeep(line, limit)
                elif byte in _CLOSE:
                    depth = max(0, depth - 1)
