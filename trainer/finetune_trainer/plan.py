"""The plan of a run -- rows, tokens, optimizer steps, epochs, memory -- and ``--dry-run``,
which checks the config and the data (tokenizer and rows; never the model weights) and
prints it. The step arithmetic is the one transformers' Trainer uses, so the plan's step
count is the run's."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig, TrainingSpec
from finetune_api.contract import TerminationMessage, TrainerReason

from .errors import InvalidInput
from .memory import GIB, MemoryEstimate, ModelShape, estimate_for
from .runtime import RuntimeOptions
from .sources import (
    ModelSource,
    dataset_description,
    output_description,
    resolve_dataset,
    resolve_model,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepPlan:
    rows: int
    micro_batch: int
    gradient_accumulation: int
    effective_batch: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_steps(rows: int, training: TrainingSpec, world_size: int = 1) -> StepPlan:
    """Optimizer steps as Trainer counts them: the data loader yields ceil(rows / batch)
    micro-batches per epoch (the last one may be short), an optimizer step takes
    ``gradient_accumulation`` of them (the epoch's remainder makes one more, shorter step).
    With maxSteps the run stops there, wherever that falls in the data."""
    batch = training.per_device_train_batch_size * world_size
    accumulation = training.gradient_accumulation_steps
    micro_batches = max(1, math.ceil(rows / batch))
    steps_per_epoch = max(1, math.ceil(micro_batches / accumulation))
    if training.max_steps is not None:
        total = training.max_steps
        epochs = total / steps_per_epoch
    else:
        assert training.num_epochs is not None
        total = math.ceil(training.num_epochs * steps_per_epoch)
        epochs = training.num_epochs
    return StepPlan(
        rows=rows,
        micro_batch=batch,
        gradient_accumulation=accumulation,
        effective_batch=batch * accumulation,
        micro_batches_per_epoch=micro_batches,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        epochs=round(epochs, 4),
    )


def read_model_config(source: ModelSource, token: str | None) -> dict[str, Any] | None:
    """The model's config.json: from its directory, or fetched alone from the Hub (a few
    KB). None when it cannot be had (no network, for example)."""
    if source.is_local:
        path = Path(source.name_or_path) / "config.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        path = Path(
            hf_hub_download(
                source.name_or_path, "config.json", revision=source.revision, token=token
            )
        )
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    except Exception as exc:  # network, auth, or a gated repo: the estimate is optional
        from .remote_errors import details

        log.warning(
            "could not read %s's config.json for the memory estimate: %s",
            source.name_or_path,
            details(exc),
        )
        return None


def build_plan(
    config: TrainerConfig,
    stats: dict[str, Any],
    steps: StepPlan,
    memory: MemoryEstimate | None,
    model: ModelSource,
) -> dict[str, Any]:
    tokens = int(stats.get("tokens", 0))
    rows_used = max(1, int(stats.get("rows_used", steps.rows)))
    mean_length = tokens / rows_used
    return {
        "fingerprint": config.fingerprint(),
        "model": model.description,
        "dataset": dataset_description(config.dataset),
        "output": output_description(config.output),
        "data": stats,
        "steps": steps.to_dict(),
        "tokens_per_step_estimate": round(mean_length * steps.effective_batch),
        "training_tokens_estimate": round(mean_length * steps.effective_batch * steps.total_steps),
        "memory_gib": memory.as_gib() if memory else None,
        "lora_params": memory.lora_params if memory else None,
        "model_params": memory.total_params if memory else None,
    }


def render_plan(plan: dict[str, Any]) -> str:
    """The plan as a few human-readable lines."""
    data, steps, mem = plan["data"], plan["steps"], plan["memory_gib"]
    lines = [
        f"model:     {plan['model']}",
        f"dataset:   {plan['dataset']}",
        f"output:    {plan['output']}",
        f"rows:      {data.get('rows_used')} used of {data.get('rows_in')} "
        f"(skipped: {data.get('skipped_invalid', 0)} invalid, "
        f"{data.get('skipped_overlong', 0)} too long; truncated: {data.get('truncated', 0)})",
        f"tokens:    {data.get('tokens')} in all, {data.get('loss_tokens')} carrying loss; "
        f"mean {data.get('mean_length', 0):.0f}, max {data.get('max_length')} per row",
        f"batch:     {steps['micro_batch']} per device x {steps['gradient_accumulation']} "
        f"accumulation = {steps['effective_batch']} rows per optimizer step",
        f"steps:     {steps['total_steps']} optimizer steps = {steps['epochs']} epochs "
        f"({steps['steps_per_epoch']} steps per epoch)",
    ]
    if mem:
        lines.append(
            f"GPU memory (rough estimate): {mem['total']} GiB = weights {mem['weights']} + "
            f"LoRA/optimizer {mem['lora_and_optimizer']} + activations {mem['activations']} + "
            f"dequantized experts {mem['dequantized_experts']} + logits {mem['logits']} + "
            f"overhead {mem['overhead']}"
        )
        lines.append(
            f"parameters: {plan['model_params'] / 1e9:.2f}B in the model, "
            f"{plan['lora_params'] / 1e6:.2f}M LoRA"
        )
    else:
        lines.append("GPU memory: no estimate (the model's config.json could not be read)")
    return "\n".join(lines)


def dry_run(config: TrainerConfig, runtime: RuntimeOptions) -> TerminationMessage:
    """Validate config and data and print the plan; loads the model's config and tokenizer,
    not its weights."""
    try:
        from .data import load_rows, prepare_dataset
        from .model_errors import load_tokenizer
        from .weight_headers import check_lora_targets

        scratch = runtime.scratch()
        model = resolve_model(config.model, scratch)
        tokenizer = load_tokenizer(config.model, model, runtime.hf_token)
        check_lora_targets(config.lora.target_modules, model, runtime.hf_token)
        local = resolve_dataset(config.dataset, scratch)
        rows = load_rows(
            config.dataset, local, token=runtime.hf_token, cache_dir=scratch / "datasets-cache"
        )
        prepared = prepare_dataset(rows, tokenizer, config)
        stats = prepared.stats.to_dict()
        steps = plan_steps(len(prepared.dataset), config.training)
        model_config = read_model_config(model, runtime.hf_token)
        memory = None
        if model_config:
            memory = estimate_for(config, ModelShape.from_config(model_config))
    except InvalidInput as exc:
        log.error("%s", exc)
        return TerminationMessage(status="invalid_input", reason=exc.reason, message=str(exc))
    plan = build_plan(config, stats, steps, memory, model)
    print(render_plan(plan))
    print(json.dumps({"plan": plan}))
    if memory is not None and memory.total > 80 * GIB:
        log.warning("the estimate exceeds 80 GiB; see the memory guidance in the README")
    return TerminationMessage(
        status="succeeded",
        reason=TrainerReason.DRY_RUN_PASSED,
        message=f"config and data are valid; {steps.total_steps} steps planned",
        total_steps=steps.total_steps,
    )
