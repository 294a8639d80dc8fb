"""Progress bars only where someone watches them: on a terminal. In a pod, stderr is a
log file, and every tqdm refresh would be a carriage-return frame in ``kubectl logs``;
the step records on stdout and the metrics endpoint carry progress there instead."""

from __future__ import annotations

import os
import sys

# Read by huggingface_hub (downloads) and transformers (loading), and by datasets, when
# they are first imported.
_LIBRARY_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def progress_bars_wanted() -> bool:
    return sys.stderr.isatty()


def silence_progress_bars_off_a_terminal() -> None:
    """Before the libraries load: their bars off unless stderr is a terminal (a setting
    the environment already has wins)."""
    if not progress_bars_wanted():
        for name in _LIBRARY_SWITCHES:
            os.environ.setdefault(name, "1")
