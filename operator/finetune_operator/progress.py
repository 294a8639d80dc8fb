"""The trainer's live metrics on their way into ``status.progress``: the newest reading of
each running trainer, and the progress status made from it."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from finetune_api.contract import TrainerProgress
from finetune_api.status import ProgressStatus, loss_display

from .timeutil import parse_time, rfc3339

Key = tuple[str, str]  # (namespace, name) of a FineTuneJob

# What status.progress shows, by the trainer's field names and the status's.
_COMPARED_FIELDS = (
    "step",
    "total_steps",
    "epoch",
    "loss",
    "learning_rate",
    "tokens_per_second",
    "eval_loss",
)


class ProgressBoard:
    """The newest metrics of each running trainer: written by the progress poller, read by
    the reconciler. One entry per running trainer pod, dropped once it stops running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readings: dict[Key, tuple[str, TrainerProgress]] = {}

    def record(self, key: Key, pod_uid: str, progress: TrainerProgress) -> bool:
        """Keep this reading; True when it differs from the last one in what the status
        shows (so the FineTuneJob is worth reconciling)."""
        with self._lock:
            earlier = self._readings.get(key)
            self._readings[key] = (pod_uid, progress)
        if earlier is None or earlier[0] != pod_uid:
            return progress.step is not None
        return _shown(earlier[1]) != _shown(progress)

    def reading(self, key: Key, pod_uid: str | None) -> TrainerProgress | None:
        """The latest reading of this pod, if it is the one the FineTuneJob's Job runs."""
        with self._lock:
            found = self._readings.get(key)
        if found is None or pod_uid is None or found[0] != pod_uid:
            return None
        return found[1]

    def retain(self, keys: set[Key]) -> None:
        """Forget the trainers that no longer run."""
        with self._lock:
            for key in [k for k in self._readings if k not in keys]:
                del self._readings[key]

    def forget(self, key: Key) -> None:
        with self._lock:
            self._readings.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._readings)


def _shown(progress: TrainerProgress) -> tuple[object, ...]:
    return (*(getattr(progress, f) for f in _COMPARED_FIELDS), progress.checkpoint_step)


_COMPARED = (
    "step",
    "totalSteps",
    "epoch",
    "loss",
    "learningRate",
    "tokensPerSecond",
    "evalLoss",
)


def progress_status(
    current: TrainerProgress,
    previous: dict[str, Any] | None,
    now: datetime,
) -> ProgressStatus | None:
    """The new status.progress, or None when nothing the user sees has changed (so the
    operator does not write status on every poll). ``previous`` is the stored one. The ETA
    comes from the time the last steps took."""
    if current.step is None:
        return None
    previous = previous or {}
    shown = {
        "step": current.step,
        "totalSteps": current.total_steps,
        "epoch": current.epoch,
        "loss": current.loss,
        # Derived from loss, so not compared: written whenever loss is.
        "lossDisplay": loss_display(current.loss),
        "learningRate": current.learning_rate,
        "tokensPerSecond": current.tokens_per_second,
        "evalLoss": current.eval_loss,
        # Derived like lossDisplay: written whenever evalLoss is.
        "evalLossDisplay": loss_display(current.eval_loss),
    }
    fresh: dict[str, Any] = {k: v for k, v in shown.items() if v is not None}
    # Only what this reading has is compared: the trainer's exit summary carries no epoch,
    # learning rate or speed, and the merge patch keeps the live values it last wrote.
    # Comparing those too would find a change on every reconcile after a run stopped.
    if all(fresh[k] == previous.get(k) for k in _COMPARED if k in fresh):
        return None
    if current.total_steps:
        fresh["summary"] = f"{current.step}/{current.total_steps}"
    eta = _eta(current, previous, now)
    if eta is not None:
        fresh["etaSeconds"] = eta
    fresh["updatedAt"] = rfc3339(now)
    return ProgressStatus.model_validate(fresh)


def _eta(current: TrainerProgress, previous: dict[str, Any], now: datetime) -> int | None:
    if not current.total_steps or current.step is None:
        return None
    if current.step >= current.total_steps:
        return 0
    last_step, last_time = previous.get("step"), parse_time(previous.get("updatedAt"))
    if last_step is None or last_time is None or current.step <= last_step:
        eta: Any = previous.get("etaSeconds")
        return int(eta) if eta is not None else None
    per_step = (now - last_time).total_seconds() / (current.step - int(last_step))
    return max(0, round(per_step * (current.total_steps - current.step)))
