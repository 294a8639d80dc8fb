"""The allocator-trace replay behind bench/gpu/profiled_cli.py's memory report."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "gpu"))
import profiled_cli

MIB = 2**20


def frame(filename: str, line: int, name: str) -> dict[str, object]:
    return {"filename": filename, "line": line, "name": name}


LOSS = [frame("/x/torch/nn/functional.py", 1, "linear"), frame("/x/unsloth_zoo/loss.py", 7, "ce")]
EXPERTS = [frame("/x/torch/autograd/function.py", 3, "apply"), frame("/x/moe_utils.py", 9, "mm")]


def alloc(addr: int, mib: int, frames: list[dict[str, object]]) -> dict[str, object]:
    return {"action": "alloc", "addr": addr, "size": mib * MIB, "frames": frames}


def free(addr: int, mib: int) -> dict[str, object]:
    return {"action": "free_completed", "addr": addr, "size": mib * MIB, "frames": []}


def test_the_peak_and_what_was_alive_then() -> None:
    trace = [
        alloc(1, 100, EXPERTS),
        alloc(2, 300, LOSS),
        alloc(3, 50, EXPERTS),  # peak: 450 MiB above the baseline
        free(2, 300),
        alloc(4, 200, LOSS),  # 350: lower than the peak, not part of it
        free(999, 64),  # a block from before recording began: the running total drops
    ]
    report = profiled_cli.peak_report({"device_traces": [trace]}, baseline=1024 * MIB)
    assert report["peak_above_baseline_gib"] == round(450 / 1024, 3)
    assert report["peak_gib"] == round(1474 / 1024, 3)
    assert report["peak_event_index"] == 2
    sites = {entry["site"]: entry for entry in report["live_at_peak"]}
    # Frames inside torch are skipped: each block is named by the model code that asked.
    assert sites["loss.py:7 ce"]["gib"] == round(300 / 1024, 3)
    assert sites["loss.py:7 ce"]["blocks"] == 1
    assert sites["moe_utils.py:9 mm"]["blocks"] == 2
    assert report["live_at_peak"][0]["site"] == "loss.py:7 ce"  # largest first


def test_an_empty_trace_reports_no_peak() -> None:
    report = profiled_cli.peak_report({"device_traces": [[]]}, baseline=0)
    assert report["peak_event_index"] == -1 and report["peak_event_site"] is None
    assert report["live_at_peak"] == []
