"""GPU smoke test of the product path: Unsloth 4-bit + LoRA on attention and MoE experts,
a few steps, a checkpoint, a kill, and a resume -- through the trainer's real CLI.

    python bench/gpu/smoke.py --work /scratch/smoke [--presets small,gpt-oss-20b-2layer]

For each preset: write a random-weight checkpoint in Unsloth's gpt-oss 4-bit layout, train
until checkpoint-2 is complete, SIGKILL the trainer, start it again and check that it
resumes from step 2 and finishes. Prints one JSON summary per preset.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "finetune_trainer.cli",
            "--config",
            str(config),
            "--metrics-port",
            "0",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"trainer exited {proc.returncode} before {path} appeared")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout:.0f}s")
        time.sleep(0.5)


def grep(log: Path, *needles: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if any(n in line for n in needles)]


def smoke(preset: str, work: Path, data: Path, timeout: float) -> dict[str, Any]:
    from random_gptoss import write

    model = work / "models" / f"{preset}-random"
    written = write(model, preset) if not (model / "config.json").exists() else {}
    out = work / preset / "out"
    config = work / preset / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(model), "maxSeqLength": 512},
                "dataset": {"path": str(data), "overlongPolicy": "truncate"},
                "training": {"maxSteps": 6, "saveSteps": 2, "learningRate": 1e-3},
                "output": {"path": str(out)},
            }
        )
    )
    first_log = work / preset / "first.log"
    proc = start(config, first_log)
    wait_for(out / "checkpoint-2" / "manifest.json", proc, timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    second_log = work / preset / "second.log"
    proc = start(config, second_log)
    code = proc.wait(timeout=timeout)
    adapter = json.loads((out / "final_model" / "adapter_config.json").read_text())
    targets = adapter.get("target_modules") or []
    steps = [
        json.loads(line)
        for line in second_log.read_text().splitlines()
        if line.startswith('{"step"')
    ]
    return {
        "preset": preset,
        "written": written,
        "first_run_killed_after": "checkpoint-2",
        "second_run_exit_code": code,
        "resume_lines": grep(second_log, "resuming from"),
        "backend": grep(first_log, "backend:"),
        "lora": grep(first_log, "LoRA rank", "expert projection"),
        "memory_plan": grep(first_log, "accumulation, gradient checkpointing"),
        "adapter_target_modules": len(targets) if isinstance(targets, list) else targets,
        "expert_targets": sorted(t for t in targets if "proj" in t and "s." in t)[:4]
        if isinstance(targets, list)
        else None,
        "second_run_steps": [s["step"] for s in steps],
        "final_loss": steps[-1]["loss"] if steps else None,
        "peak_allocated_gib": steps[-1].get("gpu_peak_allocated_gib") if steps else None,
        "final_model": sorted(p.name for p in (out / "final_model").iterdir()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/scratch/smoke"))
    parser.add_argument("--presets", default="small,gpt-oss-20b-2layer")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    from finetune_trainer.fixtures import write_tiny_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    data = write_tiny_dataset(args.work / "data.jsonl", rows=64, seed=0)
    failed = 0
    for preset in args.presets.split(","):
        try:
            result = smoke(preset, args.work, data, args.timeout)
        except Exception as exc:
            failed += 1
            result = {"preset": preset, "error": repr(exc)}
        print("SMOKE:" + json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
