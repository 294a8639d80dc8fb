"""The adapter's README.md model card, written by the trainer in place of PEFT's blank
template: what the adapter was trained from, how, how the losses went, what it is for, and
its provenance record. Every line is filled from the run; what the run did not have (an
eval set, a Hub id) is left out, never written as a blank field."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from finetune_api.config import TrainerConfig
from finetune_api.contract import TrainerProvenance

from .provenance import PROVENANCE_FILE, inputs_digest

MODEL_CARD_FILE = "README.md"


def lowest(records: Iterable[dict[str, Any]], key: str) -> tuple[int, float] | None:
    """(step, value) of the lowest finite ``key`` among the step records."""
    points = [
        (int(r.get("step", 0)), float(r[key]))
        for r in records
        if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
    return min(points, key=lambda p: p[1]) if points else None


def last(records: Sequence[dict[str, Any]], key: str) -> tuple[int, float] | None:
    """(step, value) of the newest finite ``key``."""
    for record in reversed(records):
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return int(record.get("step", 0)), float(value)
    return None


def _front_matter(config: TrainerConfig) -> str:
    meta: dict[str, Any] = {}
    if config.model.name is not None:
        meta["base_model"] = config.model.name
    meta["library_name"] = "peft"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["lora", "sft", "finetune-operator"]
    if config.dataset.name is not None:
        meta["datasets"] = [config.dataset.name]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _table(rows: Iterable[tuple[str, object]]) -> list[str]:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, "")]
    return lines


def _hyperparameters(config: TrainerConfig, steps: int) -> list[tuple[str, object]]:
    lora, training = config.lora, config.training
    batch = training.per_device_train_batch_size * training.gradient_accumulation_steps
    return [
        ("LoRA rank (r)", lora.rank),
        ("LoRA alpha", lora.alpha),
        ("LoRA dropout", lora.dropout),
        ("LoRA target modules", ", ".join(lora.target_modules)),
        ("Learning rate", f"{training.learning_rate:g} ({training.lr_scheduler_type})"),
        ("Warm-up steps", training.warmup_steps),
        ("Batch per device", training.per_device_train_batch_size),
        ("Gradient accumulation steps", training.gradient_accumulation_steps),
        ("Effective batch per GPU", batch),
        ("Optimizer steps trained", steps),
        ("Max sequence length", config.model.max_seq_length),
        ("Optimizer", training.optimizer),
        ("Seed", training.seed),
        ("Trained on", f"{training.train_on} tokens"),
    ]


def _results(records: Sequence[dict[str, Any]]) -> list[str]:
    rows: list[tuple[str, object]] = []
    for key, name in (("loss", "training loss"), ("eval_loss", "eval loss")):
        final, best = last(records, key), lowest(records, key)
        if final is not None:
            rows.append((f"Final {name}", f"{final[1]:.4g} (step {final[0]})"))
        if best is not None:
            rows.append((f"Best {name}", f"{best[1]:.4g} (step {best[0]})"))
    if not rows:
        return ["No loss was logged."]
    return _table(rows)


def _provenance(record: TrainerProvenance) -> list[str]:
    digest = inputs_digest(record)
    libraries = ", ".join(
        f"{name} {version}"
        for name, version in (
            ("torch", record.torch_version),
            ("transformers", record.transformers_version),
            ("peft", record.peft_version),
            ("trl", record.trl_version),
            ("unsloth", record.unsloth_version),
        )
        if version
    )
    gpu = "CPU" if record.gpu_model == "cpu" else f"{record.gpu_count} x {record.gpu_model}"
    rows: list[tuple[str, object]] = [
        ("Inputs digest", f"`{digest}`" if digest else None),
        ("Model revision", f"`{record.model_revision}`" if record.model_revision else None),
        ("Data digest", f"`{record.dataset_digest}`" if record.dataset_digest else None),
        ("Config fingerprint", f"`{record.config_fingerprint}`"),
        ("Trainer", f"finetune-trainer {record.trainer_version}"),
        ("Libraries", libraries),
        ("Hardware", gpu if record.gpu_model else None),
    ]
    return [
        f"Also in `{PROVENANCE_FILE}`. The inputs digest covers the model revision, the data "
        "digest and the config fingerprint; the FineTuneJob's `status.provenance.digest` "
        "adds the trainer image. Equal digests: the same training.",
        "",
        *_table(rows),
    ]


def model_card(
    config: TrainerConfig,
    record: TrainerProvenance,
    records: Sequence[dict[str, Any]],
    steps: int,
) -> str:
    """The README.md of ``final_model``."""
    base = record.model_source or config.model.source_kind
    data = record.dataset_source or config.dataset.source_kind
    split = f", split `{config.dataset.split}`" if config.dataset.name is not None else ""
    rows = f"{record.dataset_rows} rows" if record.dataset_rows is not None else "rows"
    lines = [
        _front_matter(config),
        f"# LoRA adapter for {base}",
        "",
        f"A LoRA adapter trained with supervised fine-tuning on `{data}`, by finetune-trainer.",
        "",
        "## Base model",
        "",
        f"`{base}`"
        + (f" at revision `{record.model_revision}`" if record.model_revision else "")
        + (", loaded in 4-bit" if config.model.load_in_4bit else ""),
        "",
        "## Training data",
        "",
        f"`{data}` ({config.dataset.format} format{split}): {rows} trained on, after "
        "invalid and overlong rows were handled and maxSamples applied.",
        "",
        "## Hyperparameters",
        "",
        *_table(_hyperparameters(config, steps)),
        "",
        "## Results",
        "",
        *_results(records),
        "",
        "## Intended use and limitations",
        "",
        f"Load it on top of `{base}` (PEFT `PeftModel.from_pretrained`) for the tasks and "
        "languages of its training data. It inherits the base model's limitations and "
        "biases, and it was trained on a small set of examples: it was not evaluated for "
        "safety, factual accuracy or any use beyond its training data; evaluate it on "
        "your own task before relying on it.",
        "",
        "## Provenance",
        "",
        *_provenance(record),
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    directory: Path,
    config: TrainerConfig,
    record: TrainerProvenance,
    records: Sequence[dict[str, Any]],
    steps: int,
) -> None:
    """Write README.md into ``directory``, replacing PEFT's template."""
    text = model_card(config, record, records, steps)
    (directory / MODEL_CARD_FILE).write_text(text, encoding="utf-8")
