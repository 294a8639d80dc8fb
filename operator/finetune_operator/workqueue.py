"""The queue of FineTuneJobs to reconcile, worked by a pool of threads.

It follows client-go's work queue, which every Kubernetes controller uses:

- A key waits in the queue at most once: twenty events for one FineTuneJob while it waits
  make one reconcile, not twenty.
- A key is never worked by two threads at once. One that comes back while it is being
  worked is queued again when that work ends, so the last event is never lost, and no
  thread ever waits on another FineTuneJob's lock.
- ``add_after`` brings a key back later (a quota to wait for); a failing key comes back
  with a delay that doubles up to a limit, and goes back to no delay once it succeeds.
- A key added ``first`` (a FineTuneJob not yet given its Job), if the queue knows
  nothing of it yet, is worked before the others: in a burst of new FineTuneJobs, the
  Jobs come before the status updates of the FineTuneJobs already given theirs (but one
  of the others is worked after every ``FIRST_RUN`` first keys, so no stream of new ones
  holds them back for good).
- A key that was just worked waits ``settle`` seconds before it is worked again: the
  changes that follow one another within a moment (a pod created, then marked
  unschedulable by the scheduler a few milliseconds later) make one status write, not one
  each. A new key is worked at once.

The threads run the reconcile, which makes blocking API calls (each with its own
timeout); how many run at once is the operator's ``workers`` setting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# At most this many first keys in a row while other keys wait.
FIRST_RUN = 8


@dataclass(frozen=True)
class Outcome:
    """What a worked key asks for: ``retry_after`` seconds until it is worked again
    (None: only when an event brings it back), or ``backoff``: again after the growing
    delay of a failing key (something outside the operator must change first), or after
    ``retry_after`` when both are given and that comes sooner."""

    retry_after: float | None = None
    backoff: bool = False
    gone: bool = False  # the key's object no longer exists: keep nothing about it


DONE = Outcome()
GONE = Outcome(gone=True)


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Hashable], Outcome],
        *,
        workers: int,
        name: str = "reconcile",
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        settle: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.settle = settle
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._first: deque[Hashable] = deque()  # served before _queue
        self._first_run = 0  # first keys served in a row
        self._queued: set[Hashable] = set()
        self._active: dict[Hashable, float] = {}  # key -> when its work started
        self._again: set[Hashable] = set()  # came back while being worked
        self._later: list[tuple[float, int, Hashable]] = []  # (due, tiebreak, key)
        self._due: dict[Hashable, float] = {}  # each key's earliest time in _later
        self._tiebreak = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._worked: dict[Hashable, float] = {}  # key -> when its last work ended
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.processed = 0

    # --- producers -------------------------------------------------------------------------
    def add(self, key: Hashable, *, first: bool = False) -> None:
        with self._cond:
            if first and self._new(key):
                if not self._stopping:
                    self._queued.add(key)
                    self._first.append(key)
                    self._cond.notify()
                return
            self._add(key)

    def _new(self, key: Hashable) -> bool:
        """Whether the queue knows nothing of ``key``: only such a key may go first (one
        that was worked already keeps its settle time, its delay, its backoff)."""
        return not (
            key in self._queued
            or key in self._active
            or key in self._worked
            or key in self._due
            or key in self._failures
        )

    def _add(self, key: Hashable) -> None:
        if self._stopping or key in self._queued:
            return
        if key in self._active:
            self._again.add(key)
            return
        worked = self._worked.get(key)
        if worked is not None:
            if self._clock() < worked + self.settle:
                self._schedule(key, worked + self.settle)
                return
            del self._worked[key]
        self._queued.add(key)
        self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._schedule(key, self._clock() + delay)

    def _schedule(self, key: Hashable, due: float) -> None:
        """Bring ``key`` back at ``due``, unless it already comes back sooner: a key waits
        in the delayed heap once, however often it is scheduled."""
        if self._due.get(key, float("inf")) <= due:
            return
        self._due[key] = due
        heapq.heappush(self._later, (due, next(self._tiebreak), key))
        self._cond.notify()  # a worker waiting without a timeout must learn the new time

    # --- workers ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._stopping = False
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _next(self) -> Hashable | None:
        """The next key to work, waiting for one; None once stopping."""
        with self._cond:
            while not self._stopping:
                now = self._clock()
                while self._later and self._later[0][0] <= now:
                    due, _n, later = heapq.heappop(self._later)
                    if self._due.get(later) == due:  # else superseded by a sooner time
                        del self._due[later]
                        self._add(later)
                if self._first or self._queue:
                    # First keys go first, but every FIRST_RUN-th turn goes to the others,
                    # so a tenant creating FineTuneJobs without end cannot starve them.
                    take_first = bool(self._first) and (
                        not self._queue or self._first_run < FIRST_RUN
                    )
                    self._first_run = self._first_run + 1 if take_first else 0
                    chosen = self._first.popleft() if take_first else self._queue.popleft()
                    self._queued.discard(chosen)
                    self._active[chosen] = now
                    return chosen
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(max(0.0, wait) if wait is not None else None)
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            outcome: Outcome
            try:
                outcome = self.handler(key)
                failed = outcome.backoff
            except Exception:
                log.exception("%s: reconciling %s failed; it is retried", self.name, key)
                failed = True
                outcome = DONE
            with self._cond:
                del self._active[key]
                self.processed += 1
                if outcome.gone:
                    self._forget(key)
                elif self.settle > 0:
                    self._worked[key] = self._clock()
                if failed:
                    count = self._failures.get(key, 0)
                    self._failures[key] = count + 1
                    delay = min(self.max_delay, self.base_delay * 2**count)
                    if outcome.retry_after is not None:  # a deadline due sooner comes first
                        delay = min(delay, outcome.retry_after)
                    self._schedule(key, self._clock() + delay)
                else:
                    self._failures.pop(key, None)
                    if outcome.retry_after is not None:
                        self._schedule(key, self._clock() + outcome.retry_after)
                if key in self._again:
                    self._again.discard(key)
                    self._add(key)
                self._cond.notify()

    # --- observers -------------------------------------------------------------------------
    def depth(self) -> int:
        with self._cond:
            return len(self._first) + len(self._queue)

    def forget(self, key: Hashable) -> None:
        """Drop what the queue keeps about a key that no longer exists."""
        with self._cond:
            self._forget(key)

    def _forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
        self._worked.pop(key, None)
        self._due.pop(key, None)  # its heap entry is skipped when it comes due

    def stuck(self, limit: float) -> str | None:
        """A key that one worker has been on for more than ``limit`` seconds (every API call
        has a timeout, so a reconcile that long is hung), or None."""
        now = self._clock()
        with self._cond:
            if not self._active:
                return None
            key, since = min(self._active.items(), key=lambda item: item[1])
        if now - since <= limit:
            return None
        # The probe's answer names no FineTuneJob (whoever reaches the port learns no
        # tenant's names); the log does, for the operator's own administrators.
        log.warning("%s: reconciling %s has taken %.0fs", self.name, key, now - since)
        return f"{self.name}: a reconcile has taken {now - since:.0f}s"
