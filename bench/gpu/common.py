"""What every benchmark configuration shares: the dataset, step timing, token counting,
and the numbers each run reports (one JSON object on a line starting with BENCH:)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

PROCESS_START = time.monotonic()
RESULT_PREFIX = "BENCH:"
SLOW_STEP_FACTOR = 5


def synced_now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.monotonic()


def text_dataset(path: Path, tokenizer: Any, reasoning_effort: str = "medium") -> Any:
    """The original example's data path: each chat rendered through the chat template into
    a ``text`` column that SFTTrainer tokenizes."""
    from datasets import load_dataset

    rows = load_dataset("json", data_files=str(path), split="train")

    def render(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        return {
            "text": [
                tokenizer.apply_chat_template(
                    chat,
                    tokenize=False,
                    add_generation_prompt=False,
                    reasoning_effort=reasoning_effort,
                )
                for chat in batch["messages"]
            ]
        }

    return rows.map(render, batched=True, remove_columns=rows.column_names)


class TokenCounter:
    """Wraps a data collator to count the real (non-pad) tokens of every micro-batch."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.pending = 0

    def __call__(self, features: Any) -> Any:
        batch = self.collator(features)
        mask = batch.get("attention_mask")
        if mask is not None:
            self.pending += int(mask.sum())
        else:
            self.pending += int(batch["input_ids"].numel())
        return batch

    def take(self) -> int:
        tokens, self.pending = self.pending, 0
        return tokens


def step_timer(counter: TokenCounter) -> Any:
    """A TrainerCallback recording, per optimizer step, its wall time (GPU synchronized),
    its tokens and when it ended -- measured the way the product's trainer measures."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self._last = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._last = synced_now()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = synced_now()
            self.steps.append(
                {
                    "step": state.global_step,
                    "seconds": now - self._last,
                    "tokens": counter.take(),
                    "elapsed": now - PROCESS_START,
                }
            )
            self._last = now

    return StepTimer()


def summarize(
    steps: list[dict[str, float]], warmup: int, active_params: int, peak_flops: float
) -> dict[str, Any]:
    """Steady state: the steps after ``warmup``; median seconds per step and tokens/s.

    tokens/s counts every measured step. A step taking over SLOW_STEP_FACTOR times the
    median is also counted apart (``slow_steps``; ``tokens_per_second_steady`` leaves them
    out): Unsloth recompiles when a padded length first differs from the ones it has seen,
    which can fall after the warm-up and costs tens of seconds once per run."""
    measured = steps[warmup:]
    if not measured:
        raise SystemExit(f"no steps after {warmup} warm-up steps")
    seconds = statistics.median(s["seconds"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    total_seconds = sum(s["seconds"] for s in measured)
    tokens_per_second = tokens / total_seconds
    steady = [s for s in measured if s["seconds"] <= SLOW_STEP_FACTOR * seconds]
    # Model FLOPs: 6 x active parameters per token (forward, backward, and the
    # activation-checkpointing recompute that LoRA training with checkpointing performs).
    mfu = 6 * active_params * tokens_per_second / peak_flops if peak_flops else None
    return {
        "steps_measured": len(measured),
        "median_step_seconds": round(seconds, 4),
        "tokens_per_step": round(tokens / len(measured), 1),
        "tokens_per_second": round(tokens_per_second, 1),
        "time_to_first_step_seconds": round(steps[0]["elapsed"], 1),
        "mfu": round(mfu, 4) if mfu is not None else None,
        # Every measured step, so a slow one (a recompile, a stall) shows where it was.
        "step_seconds": [round(s["seconds"], 4) for s in measured],
        "step_tokens": [int(s["tokens"]) for s in measured],
        "slow_steps": len(measured) - len(steady),
        "tokens_per_second_steady": round(
            sum(s["tokens"] for s in steady) / sum(s["seconds"] for s in steady), 1
        ),
    }


def memory() -> dict[str, float]:
    if not torch.cuda.is_available():
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def active_parameters(config: Any) -> int:
    """Parameters a token passes through: attention, the active experts, router, norms, and
    the LM head (the embedding lookup does no matmul)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, inner = text.hidden_size, text.intermediate_size
    heads, kv, head_dim = text.num_attention_heads, text.num_key_value_heads, text.head_dim
    attention = hidden * head_dim * (2 * heads + 2 * kv) + head_dim * (heads + 2 * kv) + hidden
    experts = text.num_experts_per_tok * (3 * hidden * inner + 3 * inner)
    router = hidden * text.num_local_experts
    per_layer = attention + experts + router + 2 * hidden
    return int(text.num_hidden_layers * per_layer + hidden * text.vocab_size)


def emit(record: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(record, sort_keys=True), flush=True)


def parse_result(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    return None


def script_parser(description: str, name: str) -> Any:
    """The arguments every reference script takes (bench.py passes them)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-flops", type=float, default=0.0)
    parser.add_argument("--name", default=name)
    return parser


def sft_arguments(args: Any, work_dir: str, **overrides: Any) -> dict[str, Any]:
    """The original example's SFTConfig settings, shared by both reference scripts."""
    import os

    return {
        "dataset_text_field": "text",
        "max_length": args.seq,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": args.accum,
        "warmup_steps": 5,
        "max_steps": args.warmup + args.steps,
        "learning_rate": 2e-4,
        "logging_steps": 1,
        "seed": 3407,
        "output_dir": os.environ.get("BENCH_WORK_DIR", work_dir),
        "save_strategy": "no",
        "report_to": "none",
        **overrides,
    }


def train_and_report(
    trainer: Any, args: Any, model_config: Any, load_seconds: float, **extra: Any
) -> None:
    """Count tokens, time every step, train, and print the BENCH: record."""
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer(counter)
    trainer.add_callback(timer)
    # Loading and training peak apart, measured as the product's trainer measures them.
    load_peak = memory().get("peak_allocated_gib")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    emit(
        {
            "config": args.name,
            "micro_batch": args.batch,
            "accumulation": args.accum,
            "seq": args.seq,
            "load_seconds": round(load_seconds, 1),
            **extra,
            **summarize(timer.steps, args.warmup, active_parameters(model_config), args.peak_flops),
            "load_peak_allocated_gib": load_peak,
            **memory(),
        }
    )
