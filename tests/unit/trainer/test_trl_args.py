"""The pure translator from the config to TRL's SFTConfig arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_api.config import TrainerConfig, TrainingSpec
from finetune_trainer.trl_args import sft_config_kwargs


def test_sft_config_kwargs(tmp_path: Path) -> None:
    training = TrainingSpec(max_steps=20, learning_rate=1e-4, save_steps=10, warmup_steps=2)
    kwargs = sft_config_kwargs(
        training,
        output_dir=tmp_path,
        max_length=1024,
        optimizer="adamw_torch",
        gradient_checkpointing=True,
        bf16=False,
        fp16=False,
        use_cpu=True,
    )
    assert kwargs["max_steps"] == 20
    assert kwargs["per_device_train_batch_size"] == 1
    assert kwargs["gradient_accumulation_steps"] == 4
    assert kwargs["learning_rate"] == 1e-4
    assert kwargs["warmup_steps"] == 2
    assert kwargs["optim"] == "adamw_torch"
    assert kwargs["save_steps"] == 10 and kwargs["save_total_limit"] is None
    assert kwargs["report_to"] == "none"
    assert kwargs["completion_only_loss"] is True
    assert "dataset_kwargs" not in kwargs  # TRL must build the labels from our mask
    assert kwargs["seed"] == kwargs["data_seed"] == 3407
    assert kwargs["output_dir"] == str(tmp_path)


def test_sft_config_kwargs_by_epochs(tmp_path: Path) -> None:
    config = TrainerConfig.from_mapping({"training": {"numEpochs": 2}})
    kwargs = sft_config_kwargs(
        config.training,
        output_dir=tmp_path,
        max_length=256,
        optimizer="adamw_torch",
        gradient_checkpointing=False,
        bf16=True,
        fp16=False,
        per_device_batch=2,
        gradient_accumulation=2,
    )
    assert kwargs["max_steps"] == -1 and kwargs["num_train_epochs"] == 2
    assert kwargs["per_device_train_batch_size"] == 2
    assert kwargs["gradient_accumulation_steps"] == 2


@pytest.mark.parametrize("grouped, strategy", [(False, "random"), (True, "group_by_length")])
def test_group_by_length_selects_the_sampler(tmp_path: Path, grouped: bool, strategy: str) -> None:
    kwargs = sft_config_kwargs(
        TrainingSpec(group_by_length=grouped),
        output_dir=tmp_path,
        max_length=512,
        optimizer="adamw_torch",
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
    )
    assert kwargs["train_sampling_strategy"] == strategy
    assert kwargs["packing"] is False
    # The transformers version pinned here accepts it.
    from trl import SFTConfig

    assert SFTConfig(**{**kwargs, "use_cpu": True}).train_sampling_strategy == strategy
