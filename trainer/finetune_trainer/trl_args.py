"""TRL's ``SFTConfig`` arguments, translated from the training config and the memory plan.
No import of TRL here, so the translation is testable (and fast) on its own; the backend
supplies the ``SFTConfig`` class (sft_trainer.py builds it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_api.config import TrainingSpec

from .progress_bars import progress_bars_wanted


def sft_config_kwargs(
    training: TrainingSpec,
    *,
    output_dir: Path,
    max_length: int,
    optimizer: str,
    gradient_checkpointing: bool,
    bf16: bool,
    fp16: bool,
    per_device_batch: int | None = None,
    gradient_accumulation: int | None = None,
    use_cpu: bool = False,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``trl.SFTConfig``.

    Checkpoints: Trainer writes them into ``output_dir`` (our uncommitted work directory)
    every ``save_steps``; our callback then commits, uploads and rotates them, so
    Trainer's own rotation is off (``save_total_limit=None``).

    Loss mask: the dataset arrives tokenized (``input_ids``) with our ``completion_mask``.
    With ``completion_only_loss=True`` and dataset preparation left on, TRL sees
    ``input_ids`` and does not tokenize again; it only turns the mask into a ``labels``
    column (the token where the mask is 1, -100 elsewhere) and drops the mask. Its
    truncation to ``max_length`` is a no-op (rows already fit). Packing stays off: with
    gpt-oss's eager attention (and Unsloth's flex attention) packed rows would attend to
    each other; ``groupByLength`` cuts padding instead. TRL 1.15 refuses
    ``skip_prepare_dataset`` with a mask column and no labels, and without
    ``completion_only_loss`` it would ignore the mask and train on every token.

    ``per_device_batch`` and ``gradient_accumulation`` default to the config's and exist so
    the micro-batch can be resized for speed with the same effective batch.

    Trackers (``training.reportTo``): ``report_to`` stays ``none`` because the run builds
    its trackers' callbacks itself (tracking/), each behind a guard so a failing tracker
    never fails training; ``run_name`` (the FineTuneJob's ``<namespace>/<name>``) names the
    run in them.
    """
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "num_train_epochs": training.num_epochs if training.num_epochs is not None else 1.0,
        "per_device_train_batch_size": per_device_batch or training.per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation
        or training.gradient_accumulation_steps,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": training.lr_scheduler_type,
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "optim": optimizer,
        "logging_strategy": "steps",
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        # Trainer's default replaces a non-finite step loss with the running mean, which
        # hides divergence (divergence.py) behind a finite logged loss.
        "logging_nan_inf_filter": False,
        "save_strategy": "steps",
        "save_steps": training.save_steps,
        "save_total_limit": None,
        "seed": training.seed,
        "data_seed": training.seed,
        "report_to": "none",  # trackers: tracking/run_tracking.py
        "bf16": bf16,
        "fp16": fp16,
        "use_cpu": use_cpu,
        "gradient_checkpointing": gradient_checkpointing,
        "max_length": max_length,
        "packing": False,
        "train_sampling_strategy": "group_by_length" if training.group_by_length else "random",
        "completion_only_loss": True,
        "shuffle_dataset": False,  # the sampler shuffles, seeded, and resumes in order
        "dataloader_num_workers": 0,
        "disable_tqdm": not progress_bars_wanted(),
    }
    if run_name is not None:
        kwargs["run_name"] = run_name
    if gradient_checkpointing:
        # The non-reentrant kind works with LoRA's frozen inputs (the reentrant one needs
        # inputs that require grad) and is what torch recommends.
        kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return kwargs
