"""A slow, periodic listing that keeps the watch cache honest.

A watch that breaks and reconnects lists its objects again, and a listing says nothing of
the objects deleted in between: no DELETED event ever comes for them. client-go's
informers compare the new listing with their store; kopf, which runs the operator's
watches, does not (it delivers the listed objects, so changes are caught, deletions not).
Left alone, the cache would keep such objects forever: a Job deleted during an outage
would look present (so never recreated), a deleted pod's address would stay on the
poller's list, and a deleted FineTuneJob would stay in memory.

So every ``interval`` seconds the operator lists the metadata of its FineTuneJobs, Jobs
and pods from the API server's watch cache, and removes what the listing lacks though the
cache has seen nothing of it after the listing's resourceVersion (deleted meanwhile):
the owner of a Job or pod is queued and a FineTuneJob forgotten, as the DELETED event
would have done.

Each round is three LISTs per watched namespace (one per kind, cluster-wide: three in
all), served from the API server's memory rather than etcd, of metadata only (a few
hundred bytes an object); one that fails is logged and counted, and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .cache import ClusterCache, Key, Obj, owner_key
from .kube import Kube
from .metrics import OperatorMetrics

log = logging.getLogger(__name__)

KINDS = ("FineTuneJob", "Job", "Pod")


@dataclass
class Resync:
    kube: Kube
    cache: ClusterCache
    namespaces: tuple[str, ...]
    interval: float
    # A FineTuneJob whose Job or pod was deleted behind the watches' back.
    changed: Callable[[Key], None]
    # A FineTuneJob deleted behind the watches' back (its trimmed body).
    deleted: Callable[[Obj], None]
    metrics: OperatorMetrics

    async def run(self) -> None:
        """Resync every ``interval`` seconds until cancelled (the first after one interval:
        at start-up the watches' own listing is as fresh)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await loop.run_in_executor(None, self.once)
            except Exception:  # a bug here must not end the resyncs
                log.exception("resyncing the watch cache failed")

    def once(self) -> dict[str, int]:
        """One resync of every kind in every watched namespace (blocking); how many
        deleted objects it found, by kind."""
        found: dict[str, int] = {}
        for kind in KINDS:
            for namespace in self.namespaces or (None,):
                try:
                    gone = self._kind(kind, namespace)
                except Exception:  # an expired page, a refusal: the next round tries again
                    log.exception("resyncing %ss in %s failed", kind, namespace or "all")
                    self.metrics.resync_failures.inc()
                    continue
                found[kind] = found.get(kind, 0) + gone
        if any(found.values()):
            log.info("resync: the watches had missed the deletion of %s", found)
        return found

    def _kind(self, kind: str, namespace: str | None) -> int:
        listed: set[str] = set()
        snapshot = ""
        for items, version in self.kube.list_pages(kind, namespace, metadata_only=True):
            snapshot = version
            listed.update(str(item["metadata"].get("uid")) for item in items)
        gone = self.cache.unlisted(kind, namespace, listed, snapshot)
        for body in gone:
            if kind == "FineTuneJob":
                self.deleted(body)
            elif (key := owner_key(body)) is not None:
                self.changed(key)
        return len(gone)
