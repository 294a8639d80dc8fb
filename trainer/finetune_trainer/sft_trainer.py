"""TRL's SFTTrainer as the run uses it: its arguments from the config and the memory plan
(trl_args.py), the backend's classes (Unsloth patches them), the prepared dataset, and our
callbacks in place of the stock progress printer (callbacks.py)."""

from __future__ import annotations

import logging
from typing import Any

from finetune_api.config import TrainerConfig

from .backends import Backend
from .callbacks import BatchAccounting, RunTracker, make_callbacks
from .divergence import DivergenceWatch, make_divergence_callback
from .evaluation import EvalTracker, eval_config_kwargs, evaluate_with, make_eval_callbacks
from .memory_plan import MemoryPlan
from .metrics import MetricsLog, MetricsServer
from .progress_bars import progress_bars_wanted
from .run_progress import RunProgress
from .signals import StopRequest
from .storage.targets import OutputTarget
from .tracking import RunTracking
from .trl_args import sft_config_kwargs

log = logging.getLogger(__name__)


def build_sft_trainer(
    config: TrainerConfig,
    backend: Backend,
    plan: MemoryPlan,
    model: Any,
    tokenizer: Any,
    dataset: Any,
    target: OutputTarget,
    *,
    fingerprint: str,
    progress: RunProgress,
    metrics: MetricsServer,
    metrics_log: MetricsLog,
    stop: StopRequest,
    tracking: RunTracking | None = None,
    eval_dataset: Any = None,
    eval_tracker: EvalTracker | None = None,
) -> Any:
    """The SFTTrainer that trains ``model`` on ``dataset``, writing its checkpoints into
    ``target``'s work directory and reporting through ``progress``, ``metrics`` and
    ``metrics_log``; it stops at a step boundary when ``stop`` is requested."""
    precision = backend.precision(config)
    kwargs = sft_config_kwargs(
        config.training,
        output_dir=target.artifacts.work_dir,
        max_length=config.model.max_seq_length,
        optimizer=backend.optimizer(config.training.optimizer),
        gradient_checkpointing=backend.trainer_gradient_checkpointing(plan.gradient_checkpointing),
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=backend.use_cpu,
        per_device_batch=plan.per_device,
        gradient_accumulation=plan.accumulation,
        run_name=tracking.run_name if tracking is not None else None,
    )
    kwargs.update(
        eval_config_kwargs(config, plan.per_device or kwargs["per_device_train_batch_size"])
    )
    args = backend.sft_config_class()(**kwargs)
    trainer = backend.sft_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # Ahead of the run's own callbacks: see RunTracking.callbacks.
        callbacks=tracking.callbacks() if tracking is not None else None,
    )
    accounting = BatchAccounting(trainer.data_collator)
    if eval_dataset is not None:
        evaluate_with(trainer, trainer.data_collator)
    trainer.data_collator = accounting
    tracker = RunTracker(
        target=target,
        fingerprint=fingerprint,
        progress=progress,
        metrics=metrics,
        metrics_log=metrics_log,
        stop=stop,
        accounting=accounting,
        micro_batches_per_step=args.gradient_accumulation_steps,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # Trainer prints each log dict on stdout (PrinterCallback, its choice without tqdm) or
    # under its bar: stdout carries only our JSON step records.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    for callback in make_callbacks(tracker, progress_bar=progress_bars_wanted()):
        trainer.add_callback(callback)
    # After the run's own callback: the diverged values are published before it stops.
    trainer.add_callback(
        make_divergence_callback(DivergenceWatch(config.training, fp16=precision.fp16))
    )
    if eval_tracker is not None and eval_dataset is not None:
        for callback in make_eval_callbacks(eval_tracker):
            trainer.add_callback(callback)
    log.info(
        "SFTTrainer: %s precision, optimizer %s, micro-batch %d x %d accumulation",
        precision.label,
        getattr(args.optim, "value", args.optim),
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
    )
    return trainer
