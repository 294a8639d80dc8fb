"""Evaluation during training: Trainer's own eval loop on ``dataset.eval`` every
``training.evalSteps`` (default: at each checkpoint), its results reported (metrics.jsonl,
the metrics endpoint, the termination message), and transformers' EarlyStoppingCallback
for ``training.earlyStopping``.

Trainer keeps the best eval loss and its step in its state (``best_metric``,
``best_global_step``), which every checkpoint's trainer_state.json carries; the early
stopping counter rides there too (``stateful_callbacks``, restored on resume). So a
resumed run goes on with the best-so-far and the patience left, as if never stopped.
``load_best_model_at_end`` stays off: Trainer would look for the best checkpoint in its
work directory, which the committed checkpoints have left; final_model.py loads it from
the output instead.

transformers is imported lazily (``make_eval_callbacks``) so importing this stays cheap.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.config.eval_data import eval_steps
from finetune_api.contract import TerminationMessage

from .metrics import MetricsLog, MetricsServer
from .run_progress import RunProgress

log = logging.getLogger(__name__)

EVAL_METRIC = "eval_loss"
EVAL_ACCURACY = "eval_mean_token_accuracy"


def eval_config_kwargs(config: TrainerConfig, per_device_batch: int) -> dict[str, Any]:
    """SFTConfig arguments for evaluation; empty without dataset.eval."""
    every = eval_steps(config)
    if every is None:
        return {"eval_strategy": "no"}
    return {
        "eval_strategy": "steps",
        "eval_steps": every,
        "per_device_eval_batch_size": per_device_batch,
        # Loss (and TRL's token accuracy, counted inside the loss) only: gathering the
        # logits of a 200k-token vocabulary for every eval row would need gigabytes.
        "prediction_loss_only": True,
        "metric_for_best_model": EVAL_METRIC,
        "greater_is_better": False,
        "load_best_model_at_end": False,
        # The early-stopping counter goes on where the checkpoint left it.
        "restore_callback_states_from_checkpoint": config.training.early_stopping is not None,
    }


class EvalTracker:
    """What each evaluation reports, and whether training stopped early (kept free of
    transformers so it can be unit-tested with plain objects)."""

    def __init__(
        self,
        config: TrainerConfig,
        *,
        progress: RunProgress,
        metrics: MetricsServer,
        metrics_log: MetricsLog,
    ) -> None:
        self.config = config
        self.progress = progress
        self.metrics = metrics
        self.metrics_log = metrics_log
        self.stopped_early_at: int | None = None

    def on_evaluate(self, state: Any, metrics: dict[str, Any]) -> None:
        log.info(
            "evaluation at step %d: %s",
            int(state.global_step),
            {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        )
        loss = _finite(metrics.get(EVAL_METRIC))
        if loss is None:
            return
        accuracy = _finite(metrics.get(EVAL_ACCURACY))
        step = int(state.global_step)
        # Trainer records a new best after this callback: the best so far includes this one.
        earlier = _finite(state.best_metric)
        best = loss if earlier is None else min(earlier, loss)
        self.metrics_log.emit(
            {
                "step": step,
                "eval_loss": loss,
                "eval_mean_token_accuracy": accuracy,
                "eval_seconds": _finite(metrics.get("eval_runtime")),
            }
        )
        report = self.progress.report
        report.eval_loss = loss
        report.eval_mean_token_accuracy = accuracy
        self.metrics.update(eval_loss=loss, eval_mean_token_accuracy=accuracy, best_eval_loss=best)

    def train_end(self, state: Any) -> None:
        """Training ended: before its last step, not by a stop signal, means early stopping."""
        if self.config.training.early_stopping is None or self.progress.interrupted:
            return
        if int(state.global_step) < int(state.max_steps):
            self.stopped_early_at = int(state.global_step)

    def stop_reason(self) -> str | None:
        """How the message says that training stopped early, or None."""
        early = self.config.training.early_stopping
        if self.stopped_early_at is None or early is None:
            return None
        times = f"{early.patience} evaluation{'' if early.patience == 1 else 's'}"
        return (
            f"stopped early at step {self.stopped_early_at}: the eval loss did not improve by "
            f"more than {early.min_delta:g} for {times}"
        )


def make_eval_callbacks(tracker: EvalTracker) -> list[Any]:
    """The TrainerCallback that forwards to ``tracker``, and transformers'
    EarlyStoppingCallback when ``training.earlyStopping`` is set."""
    from transformers import EarlyStoppingCallback, TrainerCallback

    class _EvalCallback(TrainerCallback):
        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            tracker.on_evaluate(state, dict(metrics or {}))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            tracker.train_end(state)

    callbacks: list[Any] = [_EvalCallback()]
    early = tracker.config.training.early_stopping
    if early is not None:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=early.patience, early_stopping_threshold=early.min_delta
            )
        )
    return callbacks


def evaluate_with(trainer: Any, collator: Any) -> None:
    """Make Trainer's eval loop collate with ``collator`` (the unwrapped one): the training
    collator counts tokens and hashes batches for the step records, which eval batches
    must not enter."""
    build = trainer.get_eval_dataloader

    def get_eval_dataloader(eval_dataset: Any = None) -> Any:
        counting = trainer.data_collator
        trainer.data_collator = collator
        try:
            return build(eval_dataset)
        finally:
            trainer.data_collator = counting

    trainer.get_eval_dataloader = get_eval_dataloader


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def outcome_text(text: str, report: TerminationMessage) -> str:
    """A finished run's message: ``text``, then why it stopped early and which weights
    final_model holds, when it was evaluated."""
    parts = [text]
    if report.early_stop is not None:
        parts.append(report.early_stop)
    if report.final_model is not None and report.eval_loss is not None:
        parts.append(f"final_model: {report.final_model.selection}")
    return "; ".join(parts)
