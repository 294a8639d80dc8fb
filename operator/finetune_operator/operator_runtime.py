"""Every part of one running operator, made and wired in one place.

cache     what the watches delivered (filled by the kopf handlers)
queue     FineTuneJobs to reconcile, worked by ``config.workers`` threads
reconciler  one FineTuneJob's convergence, reading the cache and writing via kube
poller    trainers' metrics, into the progress board, queueing what changed
health    the liveness probe's verdict on all of the above
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from .cache import ClusterCache
from .config import OperatorConfig
from .events import EventRecorder
from .health import Health
from .kube import Kube
from .metrics import OperatorMetrics
from .poller import ProgressPoller
from .progress import ProgressBoard
from .reconciler import Reconciler
from .workqueue import WorkQueue

# A FineTuneJob just reconciled waits this long before the next reconcile, so the changes
# that arrive in a burst (its Job created, its pod created, the pod found unschedulable)
# make one status write.
SETTLE_SECONDS = 0.5
# While new FineTuneJobs keep arriving (one within BURST_QUIET_SECONDS), status updates and
# Events wait, up to MAX_HOLD_SECONDS: the Jobs come first, and the writes that report on
# them come right after the burst instead of competing with it for the API server.
BURST_QUIET_SECONDS = 1.0
MAX_HOLD_SECONDS = 10.0


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
    health: Health

    def prime_cache(self) -> None:
        """List the operator's Jobs and pods into the cache (blocking; before the watches)."""
        for namespace in self.config.namespaces or (None,):
            for child in self.kube.list_children(namespace):
                self.cache.upsert(child)

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
        events = EventRecorder(kube)
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
        health = Health(queue, poller, cache, poll_limit=max(120.0, 6 * poller.budget))
        return cls(config, kube, cache, metrics, events, reconciler, queue, poller, health)
