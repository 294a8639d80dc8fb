"""A slow, periodic listing that keeps the watch cache honest.

A watch that breaks and reconnects lists its objects again, and a listing says nothing of
the objects deleted in between: no DELETED event ever comes for them. client-go's
informers compare the new listing with their store; kopf, which runs the operator's
watches, does not. Left alone, the cache would keep such objects forever: a Job deleted
during an outage would look present (so never recreated), a deleted pod's address would
stay on the poller's list, and a deleted FineTuneJob would stay in memory.

So every ``interval`` seconds the operator lists FineTuneJobs, then its Jobs and pods,
a page at a time, and:

- takes any version newer than the cache's (a change a broken watch missed), queueing the
  FineTuneJob it concerns;
- removes what the listing lacks though the cache has seen nothing of it after the
  listing's resourceVersion (deleted meanwhile), queueing the owner of a Job or pod and
  forgetting a FineTuneJob, as the DELETED event would have.

It costs the API server three paged LISTs per interval (default ten minutes), whatever
the number of FineTuneJobs, and makes no write unless something really changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cache import ClusterCache, Key, Obj, owner_key
from .kube import Kube

log = logging.getLogger(__name__)

KINDS = ("FineTuneJob", "Job", "Pod")


@dataclass
class Resync:
    kube: Kube
    cache: ClusterCache
    namespaces: tuple[str, ...]
    interval: float
    # A FineTuneJob whose object or children changed behind the watches' back.
    changed: Callable[[Key], None]
    # A FineTuneJob deleted behind the watches' back (its trimmed body).
    deleted: Callable[[Obj], None]
    rounds: int = 0

    async def run(self) -> None:
        """Resync every ``interval`` seconds until cancelled (the first after one interval:
        at start-up the watches' own listing is as fresh)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await loop.run_in_executor(None, self.once)
            except Exception:  # an unreachable API server: the next round tries again
                log.exception("resyncing the watch cache failed")

    def once(self) -> dict[str, int]:
        """One resync of every kind in every watched namespace (blocking); how many
        objects it found changed or gone, by kind."""
        found: dict[str, int] = {}
        for kind in KINDS:
            for namespace in self.namespaces or (None,):
                found[kind] = found.get(kind, 0) + self._kind(kind, namespace)
        self.rounds += 1
        if any(found.values()):
            log.info("resync: the watches had missed %s", found)
        return found

    def _kind(self, kind: str, namespace: str | None) -> int:
        listed: set[str] = set()
        snapshot = ""
        touched = 0
        for items, version in self.kube.list_pages(kind, namespace):
            snapshot = version
            for item in items:
                listed.add(str(item["metadata"].get("uid")))
                if self.cache.relisted(item):
                    touched += 1
                    self._queue(kind, item)
        for gone in self.cache.unlisted(kind, namespace, listed, snapshot):
            touched += 1
            if kind == "FineTuneJob":
                self.deleted(gone)
            else:
                self._queue(kind, gone)
        return touched

    def _queue(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"]) if kind == "FineTuneJob" else owner_key(body)
        if key is not None:
            self.changed(key)
