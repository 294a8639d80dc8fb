"""Run the trainer's CLI with a memory and kernel-time profile of a few training steps.

    BENCH_PROFILE_DIR=DIR python bench/gpu/profiled_cli.py --config CONFIG.yaml [CLI args]

The same CLI and config path as the benchmark's ``ours`` configurations; what this adds is
observation only, so its step times are not throughput figures (recording slows a step):

- **memory**: the CUDA caching allocator's history is recorded from the start of training
  (the loaded model is the baseline) until the end of step ``BENCH_PROFILE_STEPS`` (5).
  ``memory.json`` then says where the training peak happened and which code allocated the
  blocks alive at that moment, grouped by the innermost frame outside torch itself.
- **time**: a torch profiler trace of the two steps before that; ``kernels.txt`` lists the
  operators by GPU time and ``time.json`` compares GPU busy time with wall time (a GPU
  busy far less than the wall clock is waiting on the CPU to launch work).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

OUT = Path(os.environ.get("BENCH_PROFILE_DIR", "profile"))
LAST_STEP = int(os.environ.get("BENCH_PROFILE_STEPS", "5"))
TIMED_STEPS = 2
# Frames from these files say nothing about which model code asked for the memory.
_PLUMBING = ("torch/", "contextlib.py", "<frozen", "profiled_cli.py", "functools.py")


def site(frames: list[dict[str, Any]], depth: int = 3) -> str:
    """The innermost ``depth`` frames outside torch's own plumbing, innermost first."""
    useful = [
        f"{Path(f['filename']).name}:{f['line']} {f['name']}"
        for f in frames
        if not any(part in f["filename"] for part in _PLUMBING)
    ]
    return " < ".join(useful[:depth]) or "(torch internals)"


def peak_report(snapshot: dict[str, Any], baseline: int, device: int = 0) -> dict[str, Any]:
    """Replay the allocator trace: find the moment the most memory was allocated, then
    group the blocks allocated during training and still alive then by allocating site.
    ``baseline`` is what was allocated when recording began (the loaded model)."""
    trace = snapshot["device_traces"][device]
    running, peak, peak_at = 0, 0, -1
    for index, event in enumerate(trace):
        if event["action"] == "alloc":
            running += event["size"]
        elif event["action"] == "free_completed":
            running -= event["size"]
        if running > peak:
            peak, peak_at = running, index
    live: dict[int, dict[str, Any]] = {}
    for event in trace[: peak_at + 1]:
        if event["action"] == "alloc":
            live[event["addr"]] = event
        elif event["action"] == "free_completed":
            live.pop(event["addr"], None)
    by_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in live.values():
        entry = by_site[site(event.get("frames", []))]
        entry[0] += event["size"]
        entry[1] += 1
    top = sorted(by_site.items(), key=lambda kv: kv[1][0], reverse=True)[:40]
    gib = 2**30
    return {
        "baseline_gib": round(baseline / gib, 3),
        "peak_gib": round((baseline + peak) / gib, 3),
        "peak_above_baseline_gib": round(peak / gib, 3),
        "trace_events": len(trace),
        "peak_event_index": peak_at,
        "peak_event_site": site(trace[peak_at].get("frames", []), depth=8)
        if peak_at >= 0
        else None,
        "live_at_peak": [
            {"site": name, "gib": round(size / gib, 3), "blocks": count}
            for name, (size, count) in top
        ],
    }


def install() -> None:
    from transformers.trainer_callback import CallbackHandler

    state: dict[str, Any] = {"steps": 0, "profiler": None, "baseline": 0}
    original_begin = CallbackHandler.on_train_begin
    original_step_end = CallbackHandler.on_step_end

    def on_train_begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        torch.cuda.synchronize()
        state["baseline"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.memory._record_memory_history(
            max_entries=2_000_000, context="alloc", stacks="python"
        )
        return original_begin(self, *args, **kwargs)

    def on_step_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        state["steps"] += 1
        step = state["steps"]
        if step == LAST_STEP - TIMED_STEPS:
            torch.cuda.synchronize()
            profiler = torch.profiler.profile(
                activities=[
                    torch.profiler.ProfilerActivity.CPU,
                    torch.profiler.ProfilerActivity.CUDA,
                ]
            )
            profiler.__enter__()
            state["profiler"], state["wall"] = profiler, time.monotonic()
        elif step == LAST_STEP:
            torch.cuda.synchronize()
            wall = time.monotonic() - state["wall"]
            profiler = state["profiler"]
            profiler.__exit__(None, None, None)
            snapshot = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            # A failing report must not fail the training run it observes.
            try:
                write_profile(profiler, wall)
            except Exception as exc:
                print(f"PROFILE time failed: {exc!r}", flush=True)
            try:
                report = peak_report(snapshot, state["baseline"], torch.cuda.current_device())
                report["max_memory_allocated_gib"] = round(
                    torch.cuda.max_memory_allocated() / 2**30, 3
                )
                (OUT / "memory.json").write_text(json.dumps(report, indent=1))
                print("PROFILE memory:", json.dumps(report)[:4000], flush=True)
            except Exception as exc:
                print(f"PROFILE memory failed: {exc!r}", flush=True)
        return original_step_end(self, *args, **kwargs)

    CallbackHandler.on_train_begin = on_train_begin  # type: ignore[method-assign]
    CallbackHandler.on_step_end = on_step_end  # type: ignore[method-assign]


def write_profile(profiler: Any, wall: float) -> None:
    averages = profiler.key_averages()
    (OUT / "kernels.txt").write_text(
        averages.table(sort_by="self_device_time_total", row_limit=60, max_name_column_width=90)
    )
    kernel_us = sum(
        event.self_device_time_total
        for event in averages
        if event.device_type == torch.autograd.DeviceType.CUDA
    )
    launches = sum(
        event.count for event in averages if event.device_type == torch.autograd.DeviceType.CUDA
    )
    summary = {
        "steps": TIMED_STEPS,
        "wall_seconds": round(wall, 4),
        "gpu_kernel_seconds": round(kernel_us / 1e6, 4),
        "gpu_busy_fraction": round(kernel_us / 1e6 / wall, 3),
        "kernel_launches": launches,
    }
    (OUT / "time.json").write_text(json.dumps(summary, indent=1))
    print("PROFILE time:", json.dumps(summary), flush=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # First, as the trainer's Unsloth backend does: it patches transformers on import.
    with contextlib.suppress(ImportError):
        import unsloth  # noqa: F401
    install()
    sys.argv = ["finetune_trainer.cli", *sys.argv[1:]]
    runpy.run_module("finetune_trainer.cli", run_name="__main__")


if __name__ == "__main__":
    main()
