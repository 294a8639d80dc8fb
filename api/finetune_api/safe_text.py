"""One rule for text that came from outside the operator before it reaches a status, an
Event, a metric label or a log line. Pure Python: the status model (status.py) bounds
every string it holds with it, and the operator its Events and log lines.

Much of what the operator reports is written by others: the trainer's termination message
(any image can write any 4 KiB there), the API server's refusals quoting a spec, the keys
of a tenant's ConfigMap. Such text is bounded, so a status is never refused for its size
(which would freeze the FineTuneJob's reporting), and its control characters are escaped,
so nothing written by a tenant can move the cursor or recolour another user's terminal in
``kubectl describe``; nor can it make a reader see other text than is there, by reordering
it (bidirectional controls), hiding parts of it (zero-width and other invisible format
characters) or breaking a line where a log reader sees none (U+2028, U+2029). Each such
character is written as its escape, ``\\u202e``, in plain sight. Newlines and tabs stay: a
crashed trainer's log tail reads as lines.
"""

from __future__ import annotations

import re

# Long enough for a log tail or an API server refusal that names the field; far below the
# CRD's message limit, so a status that carries several of them is still accepted.
MESSAGE_LIMIT = 4096
# Events are for people scanning a list; the API server allows 1 KiB per message.
EVENT_MESSAGE_LIMIT = 1024
# A log line keeps the start of a message, which names what happened.
LOG_LIMIT = 512

_TRUNCATED = " [truncated {} characters]"
# Every character written as its escape: the controls, Unicode's format characters
# (category Cf), its line and paragraph separators, and unpaired surrogates.
_ESCAPED = re.compile(
    r"["
    # C0 controls but tab and newline, DEL, and the C1 controls (ESC and CSI start terminal
    # escape sequences; NUL ends strings in C readers of the same text).
    r"\x00-\x08\x0b-\x1f\x7f-\x9f"
    # Bidirectional controls: marks (LRM, RLM, ALM), embeddings and overrides (LRE, RLE,
    # PDF, LRO, RLO), isolates (LRI, RLI, FSI, PDI).
    r"\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069"
    # Invisible: zero-width space, non-joiner and joiner, word joiner and the invisible
    # operators, the byte-order mark (zero-width no-break space), the soft hyphen, the
    # Mongolian vowel separator, deprecated format characters, interlinear annotation.
    r"\u200b-\u200d\u2060-\u2064\ufeff\u00ad\u180e\u206a-\u206f\ufff9-\ufffb"
    # Line and paragraph separators: a new line to some readers, none to others.
    r"\u2028\u2029"
    # The other format characters (prepended concatenation marks, script format controls)
    # and the tag characters, invisible letters that can carry a hidden text.
    r"\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
    r"\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f"
    # Unpaired surrogates (JSON's "\ud800" decodes to one): no text, and no UTF-8 a log
    # handler could write.
    r"\ud800-\udfff"
    r"]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(value: object, limit: int = MESSAGE_LIMIT) -> str:
    """``value`` as text with control and invisible characters escaped, at most ``limit``
    characters (a longer text keeps its start and says how much was cut)."""
    text = _ESCAPED.sub(_escape, str(value))
    if len(text) <= limit:
        return text
    # The suffix counts within the limit; its number of digits settles within two rounds.
    keep = limit
    for _ in range(3):
        keep = max(0, limit - len(_TRUNCATED.format(len(text) - keep)))
    return text[:keep] + _TRUNCATED.format(len(text) - keep)
