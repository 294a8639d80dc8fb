"""SIGTERM (and SIGINT) handling: the kubelet sends SIGTERM on preemption, eviction or
deletion, then SIGKILL after the grace period. Before training starts there is nothing to
save, so the signal ends the run at once; during training it asks for a checkpoint at the
next optimizer-step boundary and a clean stop; while the run is finishing (final adapter,
uploads) it is noted and the run finishes."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Literal

log = logging.getLogger(__name__)

Phase = Literal["startup", "training", "finishing"]


class Interrupted(BaseException):
    """Raised when a stop signal arrives before training started. A BaseException, like
    KeyboardInterrupt: the many `except Exception` around data loading and retries must
    not turn a preemption into a bad-row error or another attempt."""


class StopRequest:
    """Records a stop signal. Install once, in the main thread."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        # When the first stop signal came (monotonic): the grace period counts from here.
        self.received_at: float | None = None
        self.phase: Phase = "startup"
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread (e.g. tests in threads)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        again = self.requested
        self.signal_name = name
        if self.received_at is None:
            self.received_at = time.monotonic()
        if self.phase == "startup" or (again and self.phase == "training"):
            raise Interrupted(f"received {name} before a checkpoint could be written")
        if self.phase == "training":
            log.warning(
                "received %s: writing a checkpoint at the next step boundary, then stopping",
                name,
            )
        else:
            log.warning("received %s while finishing; finishing first", name)

    @contextmanager
    def during(self, phase: Phase) -> Iterator[None]:
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous
