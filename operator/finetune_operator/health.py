"""The operator's liveness: alive means it still processes what the watches deliver.

Kubernetes restarts the operator when its liveness endpoint (kopf's, on
``FTO_LIVENESS_ENDPOINT``) fails. A process that is up but no longer reconciles is the
failure worth a restart, so the endpoint fails when:

- a reconcile has run for longer than every API call's timeout could explain (a worker is
  hung);
- the progress poller has not finished a round for several rounds' time;
- a watch has not delivered one of the operator's own writes back within its deadline
  (the stream is stuck: events of other objects would be missed too).

An event loop that is itself blocked cannot answer the probe at all, which fails it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cache import ClusterCache
from .poller import ProgressPoller
from .workqueue import WorkQueue


@dataclass
class Health:
    queue: WorkQueue
    poller: ProgressPoller
    cache: ClusterCache
    # Longer than a reconcile's few API calls at their full timeouts.
    reconcile_limit: float = 300.0
    poll_limit: float = 120.0

    def problems(self) -> list[str]:
        found = [
            self.queue.stuck(self.reconcile_limit),
            self.poller.stuck(self.poll_limit),
            self.cache.stuck_watch(),
        ]
        return [problem for problem in found if problem]

    def report(self) -> dict[str, object]:
        """What the liveness endpoint shows while the operator is healthy."""
        return {
            "cached": self.cache.sizes(),
            "queued": self.queue.depth(),
            "reconciled": self.queue.processed,
        }
