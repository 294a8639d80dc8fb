"""GPU benchmark: our trainer vs the plain Unsloth script vs plain transformers + PEFT, on
gpt-oss-20b's shape with random weights, back to back on one GPU.

    python bench/gpu/bench.py --preset gpt-oss-20b --work /scratch/bench \\
        --out bench/results/h200.jsonl [--configs ours,reference,...]

Each configuration runs in its own process and prints one BENCH: JSON line; this script
adds the GPU, software versions and the measured bf16 matmul rate, appends the records to
--out, and prints a markdown table. Steady state = the median step after --warmup steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from common import active_parameters, parse_result, summarize  # noqa: E402


def matmul_tflops() -> float:
    """Measured dense bf16 matmul rate (the MFU denominator), 8192^3, median of 10."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return 2 * 8192**3 / times[len(times) // 2] / 1e12


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "unsloth",
        "unsloth_zoo",
        "bitsandbytes",
        "datasets",
        "triton",
    ):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "versions": versions,
    }


def run(argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run one configuration's process, its output streamed into ``log`` as it comes, so
    a run that hangs or times out still leaves its log behind."""
    with log.open("w") as handle:
        proc = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{argv[1]} timed out after {timeout:.0f}s; log {log}") from None
    output = log.read_text()
    if returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"{argv[1]} exited {returncode}; log {log}:\n{tail}")
    return output


def ours(
    args: argparse.Namespace,
    name: str,
    model: Path,
    data: Path,
    peak: float,
    micro: int = 1,
    accum: int = 4,
    auto: bool = True,
    env: dict[str, str] | None = None,
    profile: bool = False,
    model_settings: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """Our trainer through its real CLI and config file (the same code the Job runs);
    ``training`` adds settings to the config's training section (e.g. groupByLength),
    ``model_settings`` to its model section. ``profile`` runs the CLI under
    profiled_cli.py, which writes a memory and kernel-time profile next to --out."""
    work = args.work / name
    # A fresh output every time: the trainer rightly refuses to resume another config's run.
    shutil.rmtree(work, ignore_errors=True)
    config = {
        "model": {"path": str(model), "maxSeqLength": args.seq, **(model_settings or {})},
        "dataset": {"path": str(data), "overlongPolicy": "truncate"},
        "training": {
            "maxSteps": args.warmup + args.steps,
            "saveSteps": args.warmup + args.steps,
            "perDeviceTrainBatchSize": micro,
            "gradientAccumulationSteps": accum,
            "autoMicroBatch": auto,
            "trainOn": "all",  # the reference trains on every token; compare like for like
            **training,
        },
        "output": {"path": str(work / "out")},
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **(env or {})}
    entry = ["-m", "finetune_trainer.cli"]
    if profile:
        entry = [str(HERE / "profiled_cli.py")]
        env["BENCH_PROFILE_DIR"] = str(args.out.parent / f"profile-{name}")
    out = run(
        [
            sys.executable,
            *entry,
            "--config",
            str(work / "config.yaml"),
            "--metrics-port",
            "0",
        ],
        work / "log.txt",
        args.timeout,
        env,
    )
    steps, load, chosen, load_peak = [], None, None, None
    for line in out.splitlines():
        if "model loaded in" in line:
            load = float(line.rsplit("model loaded in", 1)[1].strip().rstrip("s"))
        if "GPU memory after loading:" in line:
            load_peak = float(line.split("held,", 1)[1].split("GiB")[0])
        # The memory plan's line: "micro-batch 4 x 1 accumulation, gradient checkpointing
        # off: <reason>".
        if "micro-batch" in line and "accumulation, gradient checkpointing" in line:
            chosen = line.split("micro-batch", 1)[1].split(":")[0].strip()
        # Step records are JSON lines; a progress bar on stderr may precede one.
        at = line.find('{"step"')
        if at >= 0:
            record, _ = json.JSONDecoder().raw_decode(line, at)
            if record.get("step_seconds") is not None:
                steps.append(record)
    from transformers import AutoConfig

    timed = [
        {"seconds": r["step_seconds"], "tokens": r["tokens"], "elapsed": r["elapsed"]}
        for r in steps
    ]
    summary = summarize(
        timed, args.warmup, active_parameters(AutoConfig.from_pretrained(model)), peak
    )
    return {
        "config": name,
        "micro_batch": micro,
        "accumulation": accum,
        "auto_micro_batch": auto,
        "training": training,
        "env": {k: v for k, v in env.items() if k.startswith(("UNSLOTH_", "FTO_"))},
        "chosen_micro_batch": chosen,
        "seq": args.seq,
        "load_seconds": load,
        **summary,
        "load_peak_allocated_gib": load_peak,
        "peak_allocated_gib": max(r.get("gpu_peak_allocated_gib") or 0 for r in steps),
        "peak_reserved_gib": max(r.get("gpu_peak_reserved_gib") or 0 for r in steps),
    }


def script(
    args: argparse.Namespace,
    name: str,
    file: str,
    extra: list[str],
    peak: float,
    micro: int,
    accum: int,
) -> dict[str, Any]:
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    out = run(
        [
            sys.executable,
            str(HERE / file),
            *extra,
            "--batch",
            str(micro),
            "--accum",
            str(accum),
            "--seq",
            str(args.seq),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--peak-flops",
            str(peak),
            "--name",
            name,
        ],
        work / "log.txt",
        args.timeout,
    )
    result = parse_result(out)
    if result is None:
        raise RuntimeError(f"{name} printed no BENCH: line; see {work / 'log.txt'}")
    return result


COLUMNS = [
    ("config", "configuration"),
    ("micro_batch", "micro"),
    ("accumulation", "accum"),
    ("median_step_seconds", "s/step"),
    ("tokens_per_second", "tokens/s"),
    ("tokens_per_second_steady", "steady tokens/s"),
    ("load_peak_allocated_gib", "load peak GiB"),
    ("peak_allocated_gib", "train peak alloc GiB"),
    ("peak_reserved_gib", "peak reserved GiB"),
    ("load_seconds", "load s"),
    ("time_to_first_step_seconds", "first step s"),
    ("mfu", "MFU"),
]


def table(records: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    rows = ["| " + " | ".join(str(r.get(key, "")) for key, _ in COLUMNS) + " |" for r in records]
    return "\n".join([head, rule, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt-oss-20b")
    parser.add_argument("--work", type=Path, default=Path("/scratch/bench"))
    parser.add_argument("--out", type=Path, help="the JSON lines file records are added to")
    parser.add_argument("--configs", default="ours,ours-1x4,reference,reference-4x1,transformers")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only write the model and data into --work (so that several invocations, one "
        "per GPU, can then share them) and exit",
    )
    args = parser.parse_args()
    if args.out is None and not args.prepare:
        parser.error("--out is required (the JSON lines file records are added to)")
    args.work.mkdir(parents=True, exist_ok=True)

    from random_gptoss import write

    from finetune_trainer.fixtures import write_tiny_dataset

    data = args.work / "multilingual-thinking-bench.jsonl"
    if not data.exists():
        write_tiny_dataset(data, rows=args.rows, seed=1, reasoning_scale=6.0)
    model = args.work / "models" / f"{args.preset}-random"
    if not (model / "config.json").exists():
        started = time.monotonic()
        print(json.dumps({"wrote_model": write(model, args.preset)}), flush=True)
        print(f"model written in {time.monotonic() - started:.0f}s", flush=True)
    if args.prepare:
        return 0
    peak = matmul_tflops() * 1e12
    env = environment()
    print(json.dumps({"environment": env, "bf16_matmul_tflops": round(peak / 1e12, 1)}), flush=True)
    plans = {
        "ours": lambda: ours(args, "ours", model, data, peak),
        "ours-1x4": lambda: ours(args, "ours-1x4", model, data, peak, auto=False),
        # The example's offloaded checkpointing kept on, as the reference runs it: at 4 x 1
        # the same settings as reference-4x1, and what auto's choice to turn it off gains.
        "ours-gc": lambda: ours(
            args, "ours-gc", model, data, peak, gradientCheckpointing="unsloth"
        ),
        # The trainer's defaults planning for 14 GiB (a tenth of an H200), the memory target:
        # what a 16 GB card gets (the estimate then fits no larger micro-batch, so the
        # seed's 1 x 4 with checkpointing).
        "ours-14gib-budget": lambda: ours(
            args, "ours-14gib-budget", model, data, peak, env={"FTO_GPU_MEMORY_FRACTION": "0.1"}
        ),
        # The input embedding in host memory (model.offloadEmbedding: true), which the
        # memory plan chooses only on a GPU without room for it: what that costs per step.
        "ours-offloaded-embedding": lambda: ours(
            args,
            "ours-offloaded-embedding",
            model,
            data,
            peak,
            model_settings={"offloadEmbedding": True},
        ),
        # Observation only (recording slows the steps): where the training peak comes from
        # and how busy the GPU is; see profiled_cli.py.
        "ours-profile": lambda: ours(args, "ours-profile", model, data, peak, profile=True),
        "ours-grouped": lambda: ours(args, "ours-grouped", model, data, peak, groupByLength=True),
        # A lower cap (0.5 GB instead of up to 2 GB) on the fused LM-head loss's logits
        # buffer; it did not lower the peak on an H200, since the loss's 512-row chunks
        # (0.38 GiB) are below either cap.
        "ours-lowmem": lambda: ours(
            args, "ours-lowmem", model, data, peak, env={"UNSLOTH_LOGPROB_CHUNK_GB": "0.5"}
        ),
        "ours-8x1": lambda: ours(args, "ours-8x1", model, data, peak, micro=8, accum=1),
        "ours-16x1": lambda: ours(args, "ours-16x1", model, data, peak, micro=16, accum=1),
        "ours-16x1-grouped": lambda: ours(
            args, "ours-16x1-grouped", model, data, peak, micro=16, accum=1, groupByLength=True
        ),
        "reference": lambda: script(
            args,
            "reference",
            "reference_unsloth.py",
            ["--model", str(model), "--data", str(data)],
            peak,
            1,
            4,
        ),
        "reference-4x1": lambda: script(
            args,
            "reference-4x1",
            "reference_unsloth.py",
            ["--model", str(model), "--data", str(data)],
            peak,
            4,
            1,
        ),
        "transformers": lambda: script(
            args,
            "transformers",
            "reference_transformers.py",
            ["--preset", args.preset, "--data", str(data)],
            peak,
            1,
            4,
        ),
    }
    records = []
    for name in args.configs.split(","):
        started = time.monotonic()
        try:
            record = plans[name]()
        except Exception as exc:  # keep going: one failing configuration is still a result
            record = {"config": name, "error": str(exc)[-2000:]}
        record.update(
            preset=args.preset,
            wall_seconds=round(time.monotonic() - started, 1),
            bf16_matmul_tflops=round(peak / 1e12, 1),
            **env,
        )
        records.append(record)
        with args.out.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        print(json.dumps(record, sort_keys=True), flush=True)
    print(table([r for r in records if "error" not in r]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
