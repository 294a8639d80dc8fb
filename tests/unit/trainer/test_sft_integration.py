"""The loss mask from data preparation reaches TRL's labels unchanged: the SFTTrainer our
training loop builds (from the same config translator and backend) turns every
``completion_mask`` 0 into -100 and keeps every 1 as the token id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.runtime import RuntimeOptions
from finetune_trainer.sources import resolve_model
from finetune_trainer.train import TrainingRun, make_target


@pytest.fixture(scope="module")
def built(tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: Any) -> Any:
    from transformers import AutoTokenizer

    from finetune_trainer.backends import select_backend
    from finetune_trainer.data import load_rows, prepare_dataset
    from finetune_trainer.input_pipeline import TrainingInputs
    from finetune_trainer.provenance import rows_digest
    from finetune_trainer.step_plan import plan_steps

    tmp = tmp_path_factory.mktemp("sft")
    config = TrainerConfig.from_mapping(
        {
            "model": {"path": str(tiny_model_dir), "maxSeqLength": 512},
            "dataset": {"path": str(tiny_dataset_path), "maxSamples": 6},
            "training": {"maxSteps": 2, "perDeviceTrainBatchSize": 2},
            "output": {"path": str(tmp / "out")},
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = load_rows(config.dataset, tiny_dataset_path, cache_dir=tmp / "cache")
    prepared = prepare_dataset(rows, tokenizer, config)
    backend = select_backend("transformers")
    run = TrainingRun(config, RuntimeOptions(scratch_dir=tmp / "scratch"))
    model_source = resolve_model(config.model, tmp)
    plan = run._plan_memory(backend, model_source, None)
    model, tokenizer = backend.load(config, model_source, None, plan)
    target = make_target(config, tmp)
    target.prepare()
    inputs = TrainingInputs(
        data=prepared,
        steps=plan_steps(len(prepared.dataset), config.training),
        rows_digest=rows_digest(prepared.dataset),
    )
    trainer = run._build_trainer(backend, plan, model, tokenizer, inputs, target)
    return prepared.dataset, trainer


def test_labels_are_the_completion_mask_applied(built: Any) -> None:
    prepared, trainer = built
    train = trainer.train_dataset
    assert len(train) == len(prepared)
    assert "completion_mask" not in train.column_names  # folded into labels
    for ours, theirs in zip(prepared, train, strict=True):
        assert theirs["input_ids"] == ours["input_ids"]  # not tokenized again
        expected = [
            token if bit else -100
            for token, bit in zip(ours["input_ids"], ours["completion_mask"], strict=True)
        ]
        assert theirs["labels"] == expected
        assert 0 < sum(ours["completion_mask"]) < len(ours["input_ids"])


def test_the_collator_pads_labels_with_ignore_index(built: Any) -> None:
    _, trainer = built
    features = [trainer.train_dataset[0], trainer.train_dataset[1]]
    batch = trainer.data_collator([{k: f[k] for k in ("input_ids", "labels")} for f in features])
    short = min(range(2), key=lambda i: len(features[i]["input_ids"]))
    n = len(features[short]["input_ids"])
    assert batch["labels"][short].tolist()[:n] == features[short]["labels"]
    assert set(batch["labels"][short].tolist()[n:]) <= {-100}
    assert batch["attention_mask"][short].tolist()[n:] == [0] * (batch["labels"].shape[1] - n)
