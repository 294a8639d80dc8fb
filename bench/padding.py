"""Padding waste on Multilingual-Thinking-shaped data: the share of a micro-batch's token
slots that are padding, for the default random order and for training.groupByLength.
CPU only; the same rows and tokenizer as the GPU benchmark.

    .venv/bin/python bench/padding.py --out bench/results/padding.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--micro-batches", default="4,8,16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from finetune_api.config import TrainerConfig
    from finetune_trainer.data import load_rows, padding_report, prepare_dataset
    from finetune_trainer.fixtures import write_tiny_dataset
    from finetune_trainer.fixtures.tiny_tokenizer import build_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        data = write_tiny_dataset(
            Path(tmp) / "bench.jsonl", rows=args.rows, seed=1, reasoning_scale=6.0
        )
        config = TrainerConfig.from_mapping(
            {
                "model": {"maxSeqLength": args.seq},
                "dataset": {"path": str(data), "overlongPolicy": "truncate"},
            }
        )
        prepared = prepare_dataset(load_rows(config.dataset, data), build_tiny_tokenizer(), config)
    lengths = list(prepared.dataset["length"])
    reports = [
        padding_report(lengths, int(m), args.seq, seed=3407, grouping_batch=int(m))
        for m in args.micro_batches.split(",")
    ]
    result = {"dataset": prepared.stats.to_dict(), "padding": reports}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
