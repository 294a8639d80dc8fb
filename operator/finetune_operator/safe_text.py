"""One rule for text that came from outside the operator before it reaches a status, an
Event, a metric label or a log line.

Much of what the operator reports is written by others: the trainer's termination message
(any image can write any 4 KiB there), the API server's refusals quoting a spec, the keys
of a tenant's ConfigMap. Such text is bounded, so a status is never refused for its size
(which would freeze the FineTuneJob's reporting), and its control characters are escaped,
so nothing written by a tenant can move the cursor or recolour another user's terminal in
``kubectl describe``. Newlines and tabs stay: a crashed trainer's log tail reads as lines.
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
# C0 controls but tab and newline, DEL, and the C1 controls (ESC and CSI start terminal
# escape sequences; NUL ends strings in C readers of the same text).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def safe_text(value: object, limit: int = MESSAGE_LIMIT) -> str:
    """``value`` as text with control characters escaped, at most ``limit`` characters
    (a longer text keeps its start and says how much was cut)."""
    text = _CONTROLS.sub(_escape, str(value))
    if len(text) <= limit:
        return text
    # The suffix counts within the limit; its number of digits settles within two rounds.
    keep = limit
    for _ in range(3):
        keep = max(0, limit - len(_TRUNCATED.format(len(text) - keep)))
    return text[:keep] + _TRUNCATED.format(len(text) - keep)
