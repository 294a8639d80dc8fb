"""The operator's own Prometheus metrics (the trainer serves its training metrics itself).

finetune_operator_reconciles_total{result}        ok | conflict | error
finetune_operator_reconcile_duration_seconds      histogram
finetune_operator_status_writes_total
finetune_operator_jobs_created_total
finetune_operator_events_total{type, reason}     Events posted
finetune_operator_events_dropped_total            Events dropped: the API server fell behind
finetune_operator_finetunejobs{phase}             FineTuneJobs by phase, as their status says
finetune_operator_scrapes_total{result}           trainer metrics reads: ok | failed | skipped
finetune_operator_poll_round_seconds              histogram of one progress-poll round
finetune_operator_workqueue_depth                 FineTuneJobs waiting to be reconciled
finetune_operator_cached_objects{kind}            objects in the watch cache
finetune_operator_resync_failures_total           periodic listings that failed (resync.py)

Every label value comes from a fixed set (reasons.py), whatever the tenants' trainers say.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from finetune_api.status import Phase

log = logging.getLogger(__name__)

PHASES = tuple(Phase)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "finetune_operator_reconciles",
            "Reconciliations of a FineTuneJob, by result.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "finetune_operator_reconcile_duration_seconds",
            "Time to reconcile one FineTuneJob (its API calls included).",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "finetune_operator_status_writes", "Status updates written.", registry=self.registry
        )
        self.finished = Counter(
            "finetune_operator_finetunejobs_finished",
            "FineTuneJobs whose status this operator turned Succeeded or Failed, by phase "
            "(for alerts: a count that only grows, whatever is deleted or restarted).",
            ["phase"],
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "finetune_operator_jobs_created", "Trainer Jobs created.", registry=self.registry
        )
        self.events = Counter(
            "finetune_operator_events",
            "Kubernetes Events posted on FineTuneJobs.",
            ["type", "reason"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "finetune_operator_events_dropped",
            "Events never posted: more waited than the poster's backlog holds.",
            registry=self.registry,
        )
        self.scrapes = Counter(
            "finetune_operator_scrapes",
            "Reads of trainer metrics endpoints, by result (failed: no answer within the "
            "deadline or the round's time, or not metrics; skipped: left for a later round "
            "after earlier failures).",
            ["result"],
            registry=self.registry,
        )
        self.poll_round_seconds = Histogram(
            "finetune_operator_poll_round_seconds",
            "Time one progress-poll round took.",
            registry=self.registry,
        )
        self.resync_failures = Counter(
            "finetune_operator_resync_failures",
            "Periodic listings of FineTuneJobs, Jobs or pods (resync.py) that failed.",
            registry=self.registry,
        )
        self._state = _StateCollector()
        self.registry.register(self._state)

    def watch(
        self,
        phases: Callable[[], Tally[str]],
        sizes: Callable[[], dict[str, int]],
        depth: Callable[[], int],
    ) -> None:
        """Report what the running operator holds, read when Prometheus scrapes: no state
        of its own to keep in step."""
        self._state.sources = (phases, sizes, depth)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port (0 disables)."""
        if not port:
            log.info("operator metrics endpoint disabled")
            return
        start_http_server(port, addr=host, registry=self.registry)
        log.info("operator metrics on http://%s:%d/metrics", host, port)


class _StateCollector(Collector):
    """Gauges computed at scrape time from the operator's cache and queue."""

    def __init__(self) -> None:
        self.sources: (
            tuple[Callable[[], Tally[str]], Callable[[], dict[str, int]], Callable[[], int]] | None
        ) = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases = GaugeMetricFamily(
            "finetune_operator_finetunejobs",
            "FineTuneJobs by the phase their status records.",
            labels=["phase"],
        )
        cached = GaugeMetricFamily(
            "finetune_operator_cached_objects",
            "Objects in the operator's watch cache, by kind.",
            labels=["kind"],
        )
        depth = GaugeMetricFamily(
            "finetune_operator_workqueue_depth", "FineTuneJobs waiting to be reconciled."
        )
        counts: Tally[str] = Tally()
        sizes: dict[str, int] = {}
        waiting = 0
        if self.sources is not None:
            counts = self.sources[0]()
            sizes = self.sources[1]()
            waiting = self.sources[2]()
        for phase in PHASES:
            phases.add_metric([str(phase)], counts.get(phase, 0))
        for kind, size in sorted(sizes.items()):
            cached.add_metric([kind], size)
        depth.add_metric([], waiting)
        yield phases
        yield cached
        yield depth
