"""The operator's own Prometheus metrics (the trainer serves its training metrics itself).

finetune_operator_reconciles_total{result}        ok | conflict | error
finetune_operator_reconcile_duration_seconds      histogram
finetune_operator_status_writes_total
finetune_operator_jobs_created_total
finetune_operator_events_total{type, reason}
finetune_operator_finetunejobs{phase}             FineTuneJobs by phase, as last reconciled
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


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
            "Time to reconcile one FineTuneJob (API calls and metrics scrape included).",
            registry=self.registry,
        )
        self.status_writes = Counter(
            "finetune_operator_status_writes", "Status updates written.", registry=self.registry
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
        self.finetunejobs = Gauge(
            "finetune_operator_finetunejobs",
            "FineTuneJobs by phase, as the operator last reconciled them.",
            ["phase"],
            registry=self.registry,
        )
        for phase in PHASES:
            self.finetunejobs.labels(phase).set(0)

    def set_phases(self, phases: Iterable[str]) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in phases:
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.finetunejobs.labels(phase).set(count)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port (0 disables)."""
        if not port:
            log.info("operator metrics endpoint disabled")
            return
        start_http_server(port, addr=host, registry=self.registry)
        log.info("operator metrics on http://%s:%d/metrics", host, port)
