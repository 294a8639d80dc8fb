"""What the GPU memory held at its peak, from a CUDA allocator snapshot.

    python bench/gpu/memory_peak.py SNAPSHOT.pickle [--top 25]

The trainer writes a snapshot of its first optimizer steps when FTO_CUDA_MEMORY_SNAPSHOT
names a file (bench.py --snapshots sets it). This replays the snapshot's allocation trace,
finds the moment the most memory allocated during the recording was live, and prints
those live blocks grouped by the first frame outside PyTorch itself (the code that asked
for them), largest first. Memory allocated before the recording started (the model's
weights) is reported as one line, from the snapshot's segments.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

GIB = 2**30
# Frames in these files are the allocator's machinery, not the code that wanted memory.
MACHINERY = ("/torch/", "<frozen", "/contextlib.py", "/threading.py", "/functools.py")


def owner(frames: list[dict[str, Any]]) -> str:
    for frame in frames:
        filename = frame.get("filename", "")
        if not any(part in filename for part in MACHINERY) and filename != "??":
            return f"{Path(filename).name}:{frame.get('line')} {frame.get('name')}"
    for frame in frames:  # only PyTorch frames: name the innermost Python one
        if frame.get("filename", "").endswith(".py"):
            return f"{Path(frame['filename']).name}:{frame.get('line')} {frame.get('name')}"
    return "(no Python frame)"


def peak_composition(snapshot: dict[str, Any], device: int = 0) -> dict[str, Any]:
    trace = snapshot["device_traces"][device]
    live: dict[int, dict[str, Any]] = {}
    total = peak = 0
    at_peak: dict[int, dict[str, Any]] = {}
    for event in trace:
        action = event["action"]
        if action == "alloc":
            live[event["addr"]] = event
            total += event["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif action == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])["size"]
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in at_peak.values():
        group = groups[owner(event.get("frames", []))]
        group[0] += event["size"]
        group[1] += 1
    # Blocks allocated before the recording started carry no frames.
    before = sum(
        block["size"]
        for segment in snapshot["segments"]
        if segment.get("device", 0) == device
        for block in segment["blocks"]
        if block["state"] == "active_allocated" and not block.get("frames")
    )
    return {
        "peak_during_recording_gib": round(peak / GIB, 3),
        "allocated_before_recording_gib": round(before / GIB, 3),
        "groups": sorted(
            (
                {"owner": name, "gib": round(size / GIB, 3), "blocks": count}
                for name, (size, count) in groups.items()
            ),
            key=lambda group: -group["gib"],
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write the whole result here")
    args = parser.parse_args()
    with args.snapshot.open("rb") as handle:
        result = peak_composition(pickle.load(handle))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(
        f"peak of memory allocated during the recording: {result['peak_during_recording_gib']}"
        f" GiB, on top of {result['allocated_before_recording_gib']} GiB allocated before it"
    )
    for group in result["groups"][: args.top]:
        print(f"{group['gib']:9.3f} GiB {group['blocks']:6d} blocks  {group['owner']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
