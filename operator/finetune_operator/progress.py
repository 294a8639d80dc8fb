"""The trainer's live metrics on their way into ``status.progress``: the newest reading of
each running trainer, and the progress status made from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from finetune_api.contract import TrainerProgress
from finetune_api.status import ProgressStatus, duration_display, loss_display

from .timeutil import Clock, parse_time, rfc3339, utcnow

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


@dataclass(frozen=True)
class Watch:
    """What this operator process has seen of one trainer pod's metrics endpoint, for the
    progress deadline (stall.py): all times are this process's own readings."""

    reading: TrainerProgress | None  # the newest answer (None: it has not answered yet)
    first_tried: datetime  # the first read this process tried
    changed_at: datetime | None  # when a reading last differed from the one before
    silent_since: datetime | None  # the first read left unanswered since the last answer


@dataclass
class _Entry:
    pod_uid: str
    first_tried: datetime
    reading: TrainerProgress | None = None
    changed_at: datetime | None = None
    silent_since: datetime | None = None

    def watch(self) -> Watch:
        return Watch(self.reading, self.first_tried, self.changed_at, self.silent_since)


class ProgressBoard:
    """The newest metrics of each running trainer: written by the progress poller, read by
    the reconciler. One entry per running trainer pod, dropped once it stops running. It
    also keeps when each trainer's reading last changed and since when its endpoint has
    not answered, for the progress deadline."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}

    def _entry(self, key: Key, pod_uid: str) -> tuple[_Entry, bool]:
        """The pod's entry, and whether it is new (a new pod replaces the key's old one)."""
        entry = self._entries.get(key)
        if entry is not None and entry.pod_uid == pod_uid:
            return entry, False
        entry = self._entries[key] = _Entry(pod_uid, first_tried=self._clock())
        return entry, True

    def record(self, key: Key, pod_uid: str, progress: TrainerProgress) -> bool:
        """Keep this reading; True when it differs from the last one in what the status
        shows (so the FineTuneJob is worth reconciling)."""
        with self._lock:
            entry, _ = self._entry(key, pod_uid)
            earlier, entry.reading, entry.silent_since = entry.reading, progress, None
            if earlier is None:
                return progress.step is not None or progress.stage is not None
            if _shown(earlier) == _shown(progress):
                return False
            entry.changed_at = self._clock()
            return True

    def unanswered(self, key: Key, pod_uid: str) -> bool:
        """Note a read the pod's endpoint left unanswered; True the first time this
        process tries the pod, so the FineTuneJob is reconciled and its progress deadline
        set even if the endpoint never answers."""
        with self._lock:
            entry, new = self._entry(key, pod_uid)
            if entry.silent_since is None:
                entry.silent_since = self._clock()
            return new

    def reading(self, key: Key, pod_uid: str | None) -> TrainerProgress | None:
        """The latest reading of this pod, if it is the one the FineTuneJob's Job runs."""
        watch = self.watch(key, pod_uid)
        return watch.reading if watch is not None else None

    def watch(self, key: Key, pod_uid: str | None) -> Watch | None:
        """What this process has seen of this pod's endpoint; None before its first read."""
        with self._lock:
            found = self._entries.get(key)
            if found is None or pod_uid is None or found.pod_uid != pod_uid:
                return None
            return found.watch()

    def retain(self, keys: set[Key]) -> None:
        """Forget the trainers that no longer run."""
        with self._lock:
            for key in [k for k in self._entries if k not in keys]:
                del self._entries[key]

    def forget(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for entry in self._entries.values() if entry.reading is not None)


def _shown(progress: TrainerProgress) -> tuple[object, ...]:
    shown = (*(getattr(progress, f) for f in _COMPARED_FIELDS), progress.checkpoint_step)
    return (*shown, progress.stage)


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
    comes from the time the last steps took. A stage alone (before the first step) is
    progress too: the status shows where the trainer is while it downloads and compiles."""
    if current.step is None and current.stage is None:
        return None
    previous = previous or {}
    shown = {
        "stage": current.stage,
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
    if all(fresh[k] == previous.get(k) for k in (*_COMPARED, "stage") if k in fresh):
        return None
    if current.total_steps and current.step is not None:
        fresh["summary"] = f"{current.step}/{current.total_steps}"
    eta = _eta(current, previous, now)
    if eta is not None:
        fresh["etaSeconds"] = eta
        fresh["eta"] = duration_display(eta)
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
