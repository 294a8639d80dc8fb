"""A tracker that fails is turned off, not the run: its error is logged once, bounded, and
its callbacks are skipped from then on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from finetune_api.safe_text import safe_text

log = logging.getLogger(__name__)

# How much of a tracker's error the log keeps.
ERROR_LIMIT = 500

T = TypeVar("T")


class TrackerGuard:
    """Runs one tracker's calls; the first exception turns the tracker off."""

    def __init__(self, tracker: str) -> None:
        self.tracker = tracker
        self.failed = False

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.failed = True
            log.warning(
                "%s: %s failed, so the run goes on without it: %s",
                self.tracker,
                what,
                safe_text(f"{type(exc).__name__}: {exc}", ERROR_LIMIT),
            )
            return None


def guarded_callback(inner: Any, guard: TrackerGuard) -> Any:
    """``inner`` (a transformers TrainerCallback, such as its TensorBoard or W&B one) with
    every event behind ``guard``."""
    from transformers import TrainerCallback

    events = [name for name in vars(TrainerCallback) if name.startswith("on_")]

    def forward(event: str) -> Callable[..., Any]:
        def handler(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            return guard.call(event, getattr(inner, event), args, state, control, **kwargs)

        return handler

    cls = type(
        f"Guarded{type(inner).__name__}",
        (TrainerCallback,),
        {event: forward(event) for event in events},
    )
    return cls()
