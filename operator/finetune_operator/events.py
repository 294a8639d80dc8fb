"""Kubernetes Events on FineTuneJobs, aggregated as client-go's event recorder does.

An Event that repeats (the same FineTuneJob, type and reason within ``window`` seconds: a
checkpoint every few minutes, a run suspended and resumed) updates one Event object's
``count``, ``lastTimestamp`` and message instead of creating another object each time, so
a long run or a flapping one leaves a handful of Events, not thousands. What the recorder
remembers is bounded (least recently used first out); forgetting only means the next
repeat starts a new Event object.

Events are best effort: a lost one must never stop a reconcile. So they are posted by one
thread of their own, from a bounded queue (as client-go's broadcaster does): a reconcile
never waits for an Event; while a burst of new FineTuneJobs is being given its Jobs
(``hold``), Events wait for it to end (for ``max_hold`` seconds at most); and when the API
server cannot keep up the oldest Events waiting are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .safe_text import EVENT_MESSAGE_LIMIT, safe_text

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class EventSink(Protocol):
    def create_event(self, namespace: str, event: Obj) -> str | None: ...
    def patch_event(self, namespace: str, name: str, patch: Obj) -> bool: ...


@dataclass
class _Posted:
    name: str
    count: int
    at: float


def _event(body: Obj, kind: str, reason: str, message: str, now: str) -> Obj:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": "finetune-operator"},
        "reportingComponent": "finetune.dev/operator",
        "reportingInstance": "finetune-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Aggregates and posts Events. ``record`` only queues; ``start`` runs the thread that
    posts (without it, ``flush`` posts what is queued, as tests do)."""

    def __init__(
        self,
        sink: EventSink,
        *,
        window: float = 600.0,
        remember: int = 4096,
        backlog: int = 10_000,
        hold: Callable[[], float] | None = None,
        max_hold: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.hold = hold
        self.max_hold = max_hold
        self.window = window
        self.remember = remember
        self.backlog = backlog
        self.dropped = 0
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: deque[tuple[Obj, str, str, str, str]] = deque()
        self._since: deque[float] = deque()  # when each waiting Event was recorded
        self._posted: OrderedDict[tuple[str, str, str], _Posted] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = False

    def record(self, body: Obj, kind: str, reason: str, message: str, now: str) -> None:
        """Queue an Event of ``kind`` (Normal | Warning) on ``body``."""
        with self._cond:
            if len(self._waiting) >= self.backlog:
                self._waiting.popleft()
                self._since.popleft()
                self.dropped += 1
            self._waiting.append((body, kind, reason, safe_text(message, EVENT_MESSAGE_LIMIT), now))
            self._since.append(self._clock())
            self._cond.notify()

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            pause = self.hold() if self.hold is not None else 0.0
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                waited = self._clock() - self._since[0]
                if pause > 0 and waited < self.max_hold:
                    self._cond.wait(min(pause, self.max_hold - waited))
                    continue
                item = self._waiting.popleft()
                self._since.popleft()
                self._busy = True
            try:
                self._post(*item)
            except Exception:  # best effort: the next Event is posted all the same
                log.exception("posting an Event failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self) -> None:
        """Post everything queued (from this thread when none runs; else wait for it)."""
        if self._thread is None:
            while True:
                with self._cond:
                    if not self._waiting:
                        return
                    item = self._waiting.popleft()
                    self._since.popleft()
                self._post(*item)
        with self._cond:
            while self._waiting or self._busy:
                self._cond.wait(0.1)

    def _post(self, body: Obj, kind: str, reason: str, message: str, now: str) -> None:
        meta = body["metadata"]
        key = (meta["uid"], kind, reason)
        with self._cond:
            earlier = self._posted.get(key)
        if earlier is not None and self._clock() - earlier.at > self.window:
            earlier = None
        if earlier is not None:
            count = earlier.count + 1
            patch = {"count": count, "lastTimestamp": now, "message": message}
            if self.sink.patch_event(meta["namespace"], earlier.name, patch):
                self._remember(key, _Posted(earlier.name, count, self._clock()))
                return
            # The Event is gone (expired by the API server's TTL): start a new one.
        name = self.sink.create_event(meta["namespace"], _event(body, kind, reason, message, now))
        if name is not None:
            self._remember(key, _Posted(name, 1, self._clock()))

    def _remember(self, key: tuple[str, str, str], posted: _Posted) -> None:
        with self._cond:
            self._posted[key] = posted
            self._posted.move_to_end(key)
            while len(self._posted) > self.remember:
                self._posted.popitem(last=False)

    def forget(self, uid: str) -> None:
        """Drop what is remembered, and what still waits, of a deleted FineTuneJob."""
        with self._cond:
            for key in [k for k in self._posted if k[0] == uid]:
                del self._posted[key]
            kept = [
                (item, since)
                for item, since in zip(self._waiting, self._since, strict=True)
                if item[0]["metadata"]["uid"] != uid
            ]
            self._waiting = deque(item for item, _ in kept)
            self._since = deque(since for _, since in kept)
