"""The reference: the plain Unsloth + TRL loop the original single-machine example ran,
in its own process, with only a step timer and a token counter added.

FastLanguageModel in 4-bit, get_peft_model r=8 on attention and MoE experts with
Unsloth's gradient checkpointing, chats rendered to text with the chat template, TRL's
SFTTrainer with batch 1 x 4 accumulation, learning rate 2e-4, adamw_8bit, seq 1024.

    python bench/gpu/reference_unsloth.py --model DIR --data FILE.jsonl [--batch 1 --accum 4]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

import unsloth  # noqa: F401  (first, as the example does: it patches TRL and PEFT)
from unsloth import FastLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import script_parser, sft_arguments, text_dataset, train_and_report


def main() -> int:
    parser = script_parser(__doc__.split("\n\n")[0], "reference")
    parser.add_argument("--model", required=True)
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

    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=text_dataset(args.data, tokenizer),
        args=SFTConfig(
            **sft_arguments(
                args,
                "/tmp/bench-reference",
                optim="adamw_8bit",
                weight_decay=0.01,
                lr_scheduler_type="linear",
            )
        ),
    )
    train_and_report(trainer, args, model.config, load_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
