"""What the GPU's memory does around training: how much loading the model held and
peaked at, and, on request, a CUDA allocator snapshot of the first optimizer steps.

Loading and training are reported apart because they fail apart: a loader that briefly
needs more than training does is fixed differently from a micro-batch that is too large.
The snapshot (``FTO_CUDA_MEMORY_SNAPSHOT=/path/snapshot.pickle``) is what PyTorch's
memory visualizer (https://pytorch.org/memory_viz) reads; it names the code behind every
allocation at the peak, which is where an out-of-memory investigation starts.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from .contract import Env

log = logging.getLogger(__name__)

GIB = 2**30
# Enough allocator events for a few optimizer steps of a large model, small enough that
# the pickle stays tens of megabytes.
SNAPSHOT_MAX_ENTRIES = 200_000
SNAPSHOT_STEPS = 3


def _cuda() -> Any | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch


def after_load() -> dict[str, float]:
    """Log what the loaded model holds and what loading peaked at, then restart the peak
    counters so the step records' peaks are training's alone."""
    torch = _cuda()
    if torch is None:
        return {}
    held = torch.cuda.memory_allocated() / GIB
    peak = torch.cuda.max_memory_allocated() / GIB
    log.info("GPU memory after loading: %.2f GiB held, %.2f GiB peak while loading", held, peak)
    torch.cuda.reset_peak_memory_stats()
    return {"gpu_load_held_gib": round(held, 3), "gpu_load_peak_allocated_gib": round(peak, 3)}


class SnapshotRecorder:
    """Records allocator history from the start of training and writes the snapshot after
    SNAPSHOT_STEPS optimizer steps (or when training ends first)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recording = False

    @classmethod
    def from_env(cls) -> SnapshotRecorder | None:
        value = os.environ.get(Env.CUDA_MEMORY_SNAPSHOT)
        if not value or _cuda() is None:
            return None
        return cls(Path(value))

    def start(self) -> None:
        torch = _cuda()
        if torch is None or self.recording:
            return
        torch.cuda.memory._record_memory_history(max_entries=SNAPSHOT_MAX_ENTRIES)
        self.recording = True

    def step_end(self, step: int) -> None:
        if step >= SNAPSHOT_STEPS:
            self.finish()

    def finish(self) -> None:
        torch = _cuda()
        if torch is None or not self.recording:
            return
        self.recording = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(self.path))
            log.info("CUDA memory snapshot written to %s", self.path)
        except OSError as exc:  # a debugging aid must not fail the run
            log.warning("could not write the CUDA memory snapshot to %s: %s", self.path, exc)
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
