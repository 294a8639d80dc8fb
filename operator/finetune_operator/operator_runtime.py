"""Every part of one running operator, made and wired in one place.

cache     what the watches delivered (filled by the kopf handlers)
queue     FineTuneJobs to reconcile, worked by ``config.workers`` threads
reconciler  one FineTuneJob's convergence, reading the cache and writing via kube
poller    trainers' metrics, into the progress board, queueing what changed
resync    a slow listing that corrects what broken watches missed
health    the liveness probe's verdict on all of the above
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from .cache import ClusterCache, Obj
from .config import OperatorConfig
from .events import EventRecorder
from .health import Health
from .kube import Kube
from .metrics import OperatorMetrics
from .poller import ProgressPoller
from .progress import ProgressBoard
from .reasons import metric_reason
from .reconciler import Reconciler
from .resync import Resync
from .workqueue import WorkQueue

# A FineTuneJob just reconciled waits this long before the next reconcile, so the changes
# that arrive in a burst (its Job created, its pod created, the pod found unschedulable)
# make one status write.
SETTLE_SECONDS = 0.5
# The most API calls one reconcile makes: a Job create, a read of the Job in its way, a
# status patch and its fallback.
_CALLS_PER_RECONCILE = 4


@dataclass
class OperatorRuntime:
    config: OperatorConfig
    kube: Kube
    cache: ClusterCache
    metrics: OperatorMetrics
    events: EventRecorder
    reconciler: Reconciler
    queue: WorkQueue
    poller: ProgressPoller
    resync: Resync
    health: Health

    def prime_cache(self) -> None:
        """List the operator's Jobs and pods into the cache (blocking; before the watches)."""
        for namespace in self.config.namespaces or (None,):
            for child in self.kube.list_children(namespace):
                self.cache.upsert(child)

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        """Drop everything kept about a deleted FineTuneJob (the cache already has)."""
        self.reconciler.forget(namespace, name, uid)
        self.queue.forget((namespace, name))

    @classmethod
    def build(
        cls,
        api_client: client.ApiClient,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
    ) -> OperatorRuntime:
        metrics = metrics if metrics is not None else OperatorMetrics()
        kube = Kube(api_client, timeout=(config.api_connect_timeout, config.api_read_timeout))
        cache = ClusterCache(echo_deadline=config.watch_echo_deadline_seconds)
        board = ProgressBoard()
        events = EventRecorder(
            kube,
            posted=lambda kind, reason: metrics.events.labels(kind, metric_reason(reason)).inc(),
            dropped=metrics.events_dropped.inc,
        )
        reconciler = Reconciler(kube, cache, config, progress=board, metrics=metrics, events=events)
        queue = WorkQueue(reconciler.reconcile, workers=config.workers, settle=SETTLE_SECONDS)
        poller = ProgressPoller(
            cache,
            board,
            queue.add,
            metrics,
            interval=config.progress_poll_seconds,
            deadline=config.metrics_timeout_seconds,
            concurrency=config.scrape_concurrency,
        )
        metrics.watch(cache.phases, cache.sizes, queue.depth)

        def deleted(body: Obj) -> None:
            meta = body["metadata"]
            runtime.forget(meta["namespace"], meta["name"], meta.get("uid"))

        resync = Resync(
            kube,
            cache,
            config.namespaces,
            interval=config.resync_seconds,
            changed=queue.add,
            deleted=deleted,
            metrics=metrics,
        )
        health = Health(
            queue,
            poller,
            cache,
            reconcile_limit=reconcile_limit(config),
            poll_limit=max(120.0, 6 * poller.budget),
        )
        runtime = cls(
            config, kube, cache, metrics, events, reconciler, queue, poller, resync, health
        )
        return runtime


def reconcile_limit(config: OperatorConfig) -> float:
    """How long one reconcile may take before a worker counts as hung: twice what its API
    calls could take at their full timeouts (the client retries a connect once:
    runner.load_api_client)."""
    per_call = 2 * config.api_connect_timeout + config.api_read_timeout
    return max(60.0, 2 * _CALLS_PER_RECONCILE * per_call)
