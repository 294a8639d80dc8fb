"""Plain transformers + PEFT: bf16 weights, LoRA r=8 on attention and on the MoE expert
parameters (PEFT target_parameters), TRL's SFTTrainer, in its own process. The model is
built on the GPU with random weights of gpt-oss-20b's shape (no 4-bit, no Unsloth).

    python bench/gpu/reference_transformers.py --preset gpt-oss-20b --data FILE.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

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
    parser.add_argument("--preset", default="gpt-oss-20b")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-flops", type=float, default=0.0)
    parser.add_argument("--name", default="transformers-peft")
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig, SFTTrainer

    from finetune_trainer.fixtures.tiny_model import build_model, model_config
    from finetune_trainer.fixtures.tiny_tokenizer import build_tiny_tokenizer

    started = time.monotonic()
    tokenizer = build_tiny_tokenizer()
    config = model_config(args.preset, tokenizer=tokenizer)
    config._attn_implementation = "eager"  # gpt-oss's attention sinks need eager here
    model = build_model(config, dtype="bfloat16", device="cuda")
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    load_seconds = time.monotonic() - started
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
            gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            bf16=True,
            warmup_steps=5,
            max_steps=args.warmup + args.steps,
            learning_rate=2e-4,
            logging_steps=1,
            optim="adamw_torch_fused",
            seed=3407,
            output_dir=os.environ.get("BENCH_WORK_DIR", "/tmp/bench-transformers"),
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
            "load_note": "built in GPU memory (no checkpoint to read)",
            **summarize(timer.steps, args.warmup, active_parameters(model.config), args.peak_flops),
            **memory(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
