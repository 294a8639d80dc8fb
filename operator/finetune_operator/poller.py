"""The progress poller: reads the metrics of every running trainer, a round at a time.

It runs in the operator's event loop and costs the API server nothing: the running
trainers come from the watch cache, the readings go to the progress board, and a
FineTuneJob is queued for a reconcile only when what its status shows has changed (or
its trainer is tried for the first time). The board remembers when each trainer's reading
last changed and since when it has not answered, which is all the progress deadline
(stall.py) needs: a trainer that makes no progress costs no request at all.

A trainer's endpoint is the tenant's code, so no endpoint can hold up the others:
each read has a total deadline and a size cap (scrape.py), at most ``concurrency`` reads
run at once, and a round ends after ``budget`` seconds whatever is still outstanding.
Endpoints that answered last time go first, the fastest first, so an endpoint that
answers just inside the deadline (slow, or slow on purpose) takes a slot only after every
quick one has had its turn; one that keeps failing (still loading, or hostile) is read
less and less often, at least every ``_MAX_BACKOFF_SECONDS``, and always last, so it only
ever spends what time the round has left.

A kopf timer would need a finalizer on every FineTuneJob (deletion would wait for the
operator); this loop keeps no state in the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from finetune_api.contract import TrainerProgress

from .cache import ClusterCache, Key, Trainer
from .metrics import OperatorMetrics
from .progress import ProgressBoard
from .scrape import scrape

log = logging.getLogger(__name__)

# A trainer that is still loading its model answers once it is up; this bounds how long
# its first progress can wait after that.
_MAX_BACKOFF_SECONDS = 30.0


@dataclass
class _Failures:
    count: int = 0
    skip: int = 0  # rounds left before the next try


class ProgressPoller:
    def __init__(
        self,
        cache: ClusterCache,
        board: ProgressBoard,
        changed: Callable[[Key], None],
        metrics: OperatorMetrics,
        *,
        interval: float,
        deadline: float,
        concurrency: int = 32,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        port: int | None = None,
    ) -> None:
        self.cache = cache
        self.board = board
        self.changed = changed
        self.metrics = metrics
        self.interval = interval
        self.deadline = deadline
        self.concurrency = concurrency
        # Long enough for a read that starts late (behind ``concurrency`` others) to get its
        # whole deadline; a read still going when the budget is spent counts as failed.
        self.budget = budget if budget is not None else interval + deadline
        self._clock = clock
        self._port = port
        self._failures: dict[str, _Failures] = {}  # by pod uid
        self._latency: dict[str, float] = {}  # by pod uid: how long its last answer took
        self._started: float | None = None
        self.last_round_end: float | None = None

    async def run(self) -> None:
        """Poll until cancelled."""
        self._started = self._clock()
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                began = self._clock()
                try:
                    await self.poll_round(session)
                except Exception:  # a bug here must not end polling for every FineTuneJob
                    log.exception("progress poll round failed")
                await asyncio.sleep(max(0.0, self.interval - (self._clock() - began)))

    async def poll_round(self, session: aiohttp.ClientSession) -> None:
        with self.metrics.poll_round_seconds.time():
            trainers = self.cache.running_trainers()
            self.board.retain({t.key for t in trainers})
            live = {t.pod_uid for t in trainers}
            for uid in [u for u in self._failures if u not in live]:
                del self._failures[uid]
            for uid in [u for u in self._latency if u not in live]:
                del self._latency[uid]
            due = self._due(trainers)
            slots = asyncio.Semaphore(self.concurrency)

            async def read(trainer: Trainer) -> tuple[Trainer, TrainerProgress | None]:
                async with slots:
                    extra = {"port": self._port} if self._port else {}
                    began = self._clock()
                    progress = await scrape(
                        session, trainer.pod_ip, deadline=self.deadline, **extra
                    )
                    self._latency[trainer.pod_uid] = self._clock() - began
                    return trainer, progress

            tasks = {asyncio.create_task(read(t)): t for t in due}
            if tasks:
                finished, unfinished = await asyncio.wait(tasks, timeout=self.budget)
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
                for task, trainer in tasks.items():
                    # Cut off by the round's budget: as good as no answer.
                    self._note(trainer, task.result()[1] if task in finished else None)
        self.last_round_end = self._clock()

    def _due(self, trainers: list[Trainer]) -> list[Trainer]:
        """This round's reads: endpoints that answered last time first (the quickest
        first; a new one counts as quick), failing ones last, and those backing off not at
        all."""
        healthy, failing = [], []
        for trainer in trainers:
            failures = self._failures.get(trainer.pod_uid)
            if failures is None:
                healthy.append(trainer)
            elif failures.skip > 0:
                failures.skip -= 1
                self.metrics.scrapes.labels("skipped").inc()
            else:
                failing.append(trainer)
        healthy.sort(key=lambda trainer: self._latency.get(trainer.pod_uid, 0.0))
        return healthy + failing

    def _note(self, trainer: Trainer, progress: TrainerProgress | None) -> None:
        if progress is None:
            failures = self._failures.setdefault(trainer.pod_uid, _Failures())
            failures.count += 1
            most = int(_MAX_BACKOFF_SECONDS / max(self.interval, 0.001))
            failures.skip = min(most, 2**failures.count - 1)
            self.metrics.scrapes.labels("failed").inc()
            # Unanswered reads count towards the progress deadline (stall.py): the first
            # one queues the FineTuneJob so its deadline is set even if none is answered.
            if self.board.unanswered(trainer.key, trainer.pod_uid):
                self.changed(trainer.key)
            return
        self._failures.pop(trainer.pod_uid, None)
        self.metrics.scrapes.labels("ok").inc()
        if self.board.record(trainer.key, trainer.pod_uid, progress):
            self.changed(trainer.key)

    def stuck(self, limit: float) -> str | None:
        """Why the poller looks stuck (no round finished within ``limit`` seconds), or
        None."""
        if self._started is None:
            return None
        last = self.last_round_end if self.last_round_end is not None else self._started
        idle = self._clock() - last
        if idle <= limit:
            return None
        return f"the progress poller has not finished a round for {idle:.0f}s"
