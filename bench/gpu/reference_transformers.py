"""Plain transformers + PEFT: bf16 weights, LoRA r=8 on attention and on the MoE expert
parameters (PEFT target_parameters), TRL's SFTTrainer, in its own process. The model is
built on the GPU with random weights of gpt-oss-20b's shape (no 4-bit, no Unsloth).

    python bench/gpu/reference_transformers.py --preset gpt-oss-20b --data FILE.jsonl
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import script_parser, sft_arguments, text_dataset, train_and_report


def full_logits_trainer(base: type) -> type:
    """For the CPU smoke test only: TRL's fused LM-head loss is a Triton (GPU) kernel."""
    from transformers import Trainer

    class FullLogits(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return FullLogits


def main() -> int:
    parser = script_parser(__doc__.split("\n\n")[0], "transformers-peft")
    parser.add_argument("--preset", default="gpt-oss-20b")
    parser.add_argument(
        "--device", default="cuda", help="cpu: a smoke test with --preset tiny (bench/README.md)"
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"

    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig, SFTTrainer

    from finetune_trainer.fixtures.tiny_model import build_model, model_config
    from finetune_trainer.fixtures.tiny_tokenizer import build_tiny_tokenizer

    started = time.monotonic()
    tokenizer = build_tiny_tokenizer()
    config = model_config(args.preset, tokenizer=tokenizer)
    config._attn_implementation = "eager"  # gpt-oss's attention sinks need eager here
    model = build_model(config, dtype="bfloat16" if cuda else "float32", device=args.device)
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
    trainer_class = SFTTrainer if cuda else full_logits_trainer(SFTTrainer)
    trainer = trainer_class(
        model=model,
        processing_class=tokenizer,
        train_dataset=text_dataset(args.data, tokenizer),
        args=SFTConfig(
            **sft_arguments(
                args,
                "/tmp/bench-transformers",
                gradient_checkpointing=True,
                gradient_checkpointing_kwargs={"use_reentrant": False},
                bf16=cuda,
                use_cpu=not cuda,
                optim="adamw_torch_fused" if cuda else "adamw_torch",
            )
        ),
    )
    train_and_report(
        trainer,
        args,
        model.config,
        load_seconds,
        load_note="built in GPU memory (no checkpoint to read)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
