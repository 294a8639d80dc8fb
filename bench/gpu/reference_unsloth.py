"""The reference: the plain Unsloth + TRL loop the original single-machine example ran,
in its own process, with only a step timer and a token counter added.

FastLanguageModel in 4-bit, get_peft_model r=8 on attention and MoE experts with
Unsloth's gradient checkpointing, chats rendered to text with the chat template, TRL's
SFTTrainer with batch 1 x 4 accumulation, learning rate 2e-4, adamw_8bit, seq 1024.

    python bench/gpu/reference_unsloth.py --model DIR --data FILE.jsonl [--batch 1 --accum 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

import unsloth  # noqa: F401  (first, as the example does: it patches TRL and PEFT)
from unsloth import FastLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TokenCounter,
    active_parameters,
    emit,
    memory,
    step_timer,
    summarize,
    text_dataset,
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-flops", type=float, default=0.0)
    parser.add_argument("--name", default="reference")
    args = parser.parse_args()

    started = time.monotonic()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=args.model, max_seq_length=args.seq, load_in_4bit=True, dtype=None
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=8,
        lora_alpha=16,
        lora_dropout=0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"],
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=3407,
    )
    load_seconds = time.monotonic() - started
    from trl import SFTConfig, SFTTrainer

    dataset = text_dataset(args.data, tokenizer)
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=dataset,
        args=SFTConfig(
            dataset_text_field="text",
            max_length=args.seq,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=args.accum,
            warmup_steps=5,
            max_steps=args.warmup + args.steps,
            learning_rate=2e-4,
            logging_steps=1,
            optim="adamw_8bit",
            weight_decay=0.01,
            lr_scheduler_type="linear",
            seed=3407,
            output_dir=os.environ.get("BENCH_WORK_DIR", "/tmp/bench-reference"),
            save_strategy="no",
            report_to="none",
        ),
    )
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer(counter)
    trainer.add_callback(timer)
    trainer.train()
    emit(
        {
            "config": args.name,
            "micro_batch": args.batch,
            "accumulation": args.accum,
            "seq": args.seq,
            "load_seconds": round(load_seconds, 1),
            **summarize(timer.steps, args.warmup, active_parameters(model.config), args.peak_flops),
            **memory(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
