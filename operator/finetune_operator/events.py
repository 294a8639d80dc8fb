"""Kubernetes Events on FineTuneJobs, aggregated as client-go's event recorder does.

An Event that repeats (the same FineTuneJob, type and reason within ``window`` seconds: a
checkpoint every few minutes, a run suspended and resumed) updates one Event object's
``count``, ``lastTimestamp`` and message instead of creating another object each time, so
a long run or a flapping one leaves a handful of Events, not thousands. What the recorder
remembers is bounded (least recently used first out); forgetting only means the next
repeat starts a new Event object.

Events are best effort: a lost one must never stop a reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
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
    def __init__(
        self,
        sink: EventSink,
        *,
        window: float = 600.0,
        remember: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.window = window
        self.remember = remember
        self._clock = clock
        self._lock = threading.Lock()
        self._posted: OrderedDict[tuple[str, str, str], _Posted] = OrderedDict()

    def record(self, body: Obj, kind: str, reason: str, message: str, now: str) -> None:
        """Post (or count again) an Event of ``kind`` (Normal | Warning) on ``body``."""
        meta = body["metadata"]
        message = safe_text(message, EVENT_MESSAGE_LIMIT)
        key = (meta["uid"], kind, reason)
        with self._lock:
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
        with self._lock:
            self._posted[key] = posted
            self._posted.move_to_end(key)
            while len(self._posted) > self.remember:
                self._posted.popitem(last=False)

    def forget(self, uid: str) -> None:
        """Drop what is remembered about a deleted FineTuneJob's Events."""
        with self._lock:
            for key in [k for k in self._posted if k[0] == uid]:
                del self._posted[key]
