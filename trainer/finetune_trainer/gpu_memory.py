"""What loading the model did to GPU memory: how much the loaded model holds and what
loading peaked at.

Loading and training are reported apart because they fail apart: a loader that briefly
needs more than training does is fixed differently from a micro-batch that is too large.
After this, the peak counters restart, so the step records' ``gpu_peak_*`` are training's.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

GIB = 2**30


def after_load() -> None:
    """Log what the loaded model holds and what loading peaked at, then restart the peak
    counters. Nothing without a GPU (or before torch is imported)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    held = torch.cuda.memory_allocated() / GIB
    peak = torch.cuda.max_memory_allocated() / GIB
    log.info("GPU memory after loading: %.2f GiB held, %.2f GiB peak while loading", held, peak)
    torch.cuda.reset_peak_memory_stats()
