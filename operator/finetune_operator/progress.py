"""Read the trainer's live metrics and turn them into ``status.progress``."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from finetune_trainer import contract
from finetune_trainer.contract import TrainerProgress, parse_metrics

from .timeutil import parse_time, rfc3339


def scrape(
    pod_ip: str, *, timeout: float, port: int = contract.METRICS_PORT
) -> TrainerProgress | None:
    """GET the pod's metrics endpoint; None when it is not answering yet (still loading the
    model, or between attempts)."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    url = f"http://{host}:{port}{contract.METRICS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(1 << 20).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return parse_metrics(text)


_COMPARED = ("step", "totalSteps", "epoch", "loss", "learningRate", "tokensPerSecond")


def progress_status(
    current: TrainerProgress,
    previous: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any] | None:
    """The new status.progress, or None when nothing the user sees has changed (so the
    operator does not write status on every poll). The ETA comes from the time the last
    steps took."""
    if current.step is None:
        return None
    previous = previous or {}
    fresh: dict[str, Any] = {
        "step": current.step,
        "totalSteps": current.total_steps,
        "epoch": current.epoch,
        "loss": current.loss,
        "learningRate": current.learning_rate,
        "tokensPerSecond": current.tokens_per_second,
    }
    fresh = {k: v for k, v in fresh.items() if v is not None}
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
    return fresh


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
