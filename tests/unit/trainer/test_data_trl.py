"""The contract with TRL's SFTTrainer: with ``completion_only_loss=True`` it turns our
``completion_mask`` into labels unchanged, and neither re-tokenizes nor appends EOS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_trainer.data import prepare_dataset
from finetune_trainer.fixtures import generate_rows


def test_sft_trainer_trains_exactly_the_masked_tokens(
    tmp_path: Path, tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = TrainerConfig.from_mapping(
        {"dataset": {"path": "/data"}, "model": {"maxSeqLength": 512}}
    )
    prepared = prepare_dataset(
        datasets.Dataset.from_list(generate_rows(6, seed=4)), tiny_tokenizer, config
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        processing_class=tiny_tokenizer,
        train_dataset=prepared.dataset,
        args=SFTConfig(
            output_dir=str(tmp_path / "out"),
            completion_only_loss=True,  # the default (None) ignores completion_mask here
            max_length=config.model.max_seq_length,  # the default 1024 would truncate
            per_device_train_batch_size=2,
            report_to="none",
            use_cpu=True,
        ),
    )
    ours = prepared.dataset
    theirs = trainer.train_dataset
    assert "completion_mask" not in theirs.column_names  # folded into labels
    assert len(theirs) == len(ours)
    for mine, trl_row in zip(ours, theirs, strict=True):
        assert trl_row["input_ids"] == mine["input_ids"]  # not re-tokenized, no EOS added
        assert trl_row["labels"] == [
            token if bit else -100
            for token, bit in zip(mine["input_ids"], mine["completion_mask"], strict=True)
        ]
    batch = trainer.data_collator([theirs[0], theirs[1]])
    width = max(len(theirs[0]["input_ids"]), len(theirs[1]["input_ids"]))
    assert tuple(batch["labels"].shape) == (2, width)
    short = min(0, 1, key=lambda i: len(theirs[i]["input_ids"]))
    padding = width - len(theirs[short]["input_ids"])
    assert padding > 0
    assert batch["labels"][short, -padding:].tolist() == [-100] * padding
    assert batch["input_ids"][short, -padding:].tolist() == [tiny_tokenizer.pad_token_id] * padding
