"""Periodic reconciliation of unfinished FineTuneJobs, reading the trainer's metrics.

A kopf timer would do this too, but kopf guards timers with a finalizer on every object,
which would make deleting a FineTuneJob wait for the operator. This poller keeps no state
in the cluster: it revisits the FineTuneJobs the reconciler last saw unfinished.
"""

from __future__ import annotations

import logging
import threading

from .reconciler import Reconciler

log = logging.getLogger(__name__)


class ProgressPoller:
    def __init__(self, reconciler: Reconciler, interval: float) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="progress-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def poll_once(self) -> None:
        """Reconcile each unfinished FineTuneJob once. One that has finished, or no longer
        exists, drops out of the list by itself: the reconciler stops listing it (a finished
        one stays counted under its phase)."""
        for namespace, name in self.reconciler.unfinished():
            if self._stop.is_set():
                return
            try:
                self.reconciler.reconcile(namespace, name, poll_metrics=True)
            except Exception:  # one failing FineTuneJob must not stop the others
                log.exception("%s/%s: progress poll failed", namespace, name)
