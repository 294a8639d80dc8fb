"""Tracker calls made off the training loop: one thread sends them in order, so a slow
tracking server never slows a step. At most ``limit`` calls wait; beyond that the newest
are dropped (and said so once), and the end of the run waits for the rest for a bounded
time only."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .guard import TrackerGuard

log = logging.getLogger(__name__)

_STOP = object()


class BackgroundSender:
    def __init__(self, guard: TrackerGuard, limit: int = 1000) -> None:
        self.guard = guard
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=limit)
        self._dropped = 0
        self._thread = threading.Thread(
            target=self._run, name=f"{guard.tracker}-sender", daemon=True
        )
        self._thread.start()

    def submit(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        if self.guard.failed:
            return
        try:
            self._queue.put_nowait((what, fn, args))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "%s: the tracking server falls behind; dropping what it cannot take",
                    self.guard.tracker,
                )

    def drain(self, timeout: float) -> None:
        """Send what waits, for at most ``timeout`` seconds; then stop the thread."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(0.0, timeout))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning(
                "%s: gave up waiting for the tracking server after %.0f s; some metrics "
                "were not sent",
                self.guard.tracker,
                timeout,
            )
        if self._dropped:
            log.warning("%s: %d metric records were dropped", self.guard.tracker, self._dropped)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            what, fn, args = item
            self.guard.call(what, fn, *args)


def call_within(
    guard: TrackerGuard, seconds: float, what: str, fn: Callable[..., Any], *args: Any
) -> None:
    """``guard.call`` in a thread of its own, waited for ``seconds`` at most: a tracking
    server that trickles its answer (each read within its timeout) or an artifact store
    without one cannot hold the run's exit. A call still going is left behind (a daemon
    thread, which the process's exit ends) and the tracker is not called again."""
    thread = threading.Thread(
        target=guard.call, args=(what, fn, *args), name=f"{guard.tracker}-final", daemon=True
    )
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        guard.failed = True
        log.warning(
            "%s: %s took over %.0f s; the run goes on without it", guard.tracker, what, seconds
        )
