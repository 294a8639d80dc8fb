"""Kubernetes Events on FineTuneJobs, aggregated as client-go's event recorder does.

An Event that repeats (the same FineTuneJob, type and reason within ``window`` seconds: a
checkpoint every few minutes, a run suspended and resumed) updates one Event object's
``count``, ``lastTimestamp`` and message instead of creating another object each time, so
a long run or a flapping one leaves a handful of Events, not thousands. What the recorder
remembers is bounded (least recently used first out); forgetting only means the next
repeat starts a new Event object.

Events are best effort: a lost one must never stop a reconcile. So they are posted by one
thread of their own, from a bounded queue (as client-go's broadcaster does): a reconcile
never waits for an Event, and when the API server cannot keep up the oldest Events
waiting are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from finetune_api.safe_text import EVENT_MESSAGE_LIMIT, safe_text

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
        posted: Callable[[str, str], None] | None = None,
        dropped: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        # Told of each Event the API server took (its type and reason), and of each dropped.
        self.on_posted = posted
        self.on_dropped = dropped
        self.window = window
        self.remember = remember
        self.backlog = backlog
        self.dropped = 0
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: deque[tuple[Obj, str, str, str, str]] = deque()
        self._posted: OrderedDict[tuple[str, str, str], _Posted] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = False

    def record(self, body: Obj, kind: str, reason: str, message: str, now: str) -> None:
        """Queue an Event of ``kind`` (Normal | Warning) on ``body``."""
        with self._cond:
            if len(self._waiting) >= self.backlog:
                self._waiting.popleft()
                self.dropped += 1
                if self.on_dropped is not None:
                    self.on_dropped()
            self._waiting.append((body, kind, reason, safe_text(message, EVENT_MESSAGE_LIMIT), now))
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
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._waiting.popleft()
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
                self._posted_one(kind, reason)
                return
            # The Event is gone (expired by the API server's TTL): start a new one.
        name = self.sink.create_event(meta["namespace"], _event(body, kind, reason, message, now))
        if name is not None:
            self._remember(key, _Posted(name, 1, self._clock()))
            self._posted_one(kind, reason)

    def _posted_one(self, kind: str, reason: str) -> None:
        if self.on_posted is not None:
            self.on_posted(kind, reason)

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
            self._waiting = deque(
                item for item in self._waiting if item[0]["metadata"]["uid"] != uid
            )
