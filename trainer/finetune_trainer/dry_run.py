"""``--dry-run``: check the config and the data the way the run does (the same input
pipeline, never the model weights) and print the plan of the run -- rows, tokens,
optimizer steps, epochs, a GPU memory estimate."""

from __future__ import annotations

import json
import logging
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.contract import TerminationMessage, TrainerReason

from .errors import InvalidInput
from .input_pipeline import prepare_inputs
from .memory_estimate import GIB, MemoryEstimate, ModelShape, estimate_for, read_model_config
from .runtime import RuntimeOptions
from .sources import ModelSource, dataset_description, output_description, resolve_model
from .step_plan import StepPlan

log = logging.getLogger(__name__)


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
        from .weight_headers import check_lora_targets

        scratch = runtime.scratch()
        model = resolve_model(config.model, scratch)
        check_lora_targets(config.lora.target_modules, model, runtime.hf_token)
        inputs = prepare_inputs(config, model, scratch, runtime.hf_token)
        stats, steps = inputs.data.stats.to_dict(), inputs.steps
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
