"""The work queue: one reconcile per burst of events, never two at once for a key, the
last event never lost, failures retried with a growing delay."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Hashable

from finetune_operator.workqueue import DONE, FIRST_RUN, GONE, Outcome, WorkQueue


def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_burst_of_events_is_one_reconcile() -> None:
    seen: list[Hashable] = []
    queue = WorkQueue(lambda key: seen.append(key) or DONE, workers=2)
    for _ in range(20):
        queue.add("a")
    queue.add("b")
    queue.start()
    wait_until(lambda: queue.processed == 2)
    queue.stop()
    assert sorted(seen) == ["a", "b"]  # type: ignore[type-var]


def test_a_key_is_never_worked_twice_at_once_and_its_last_event_is_kept() -> None:
    running = threading.Event()
    release = threading.Event()
    active = []
    overlaps = []
    calls = []

    def handler(key: Hashable) -> Outcome:
        if key in active:
            overlaps.append(key)
        active.append(key)
        calls.append(key)
        if len(calls) == 1:
            running.set()
            release.wait(5)
        active.remove(key)
        return DONE

    queue = WorkQueue(handler, workers=4)
    queue.start()
    queue.add("a")
    assert running.wait(5)
    queue.add("a")  # an event while "a" is being worked
    queue.add("b")  # other keys go on meanwhile
    wait_until(lambda: "b" in calls)
    assert calls.count("a") == 1
    release.set()
    wait_until(lambda: calls.count("a") == 2)
    queue.stop()
    assert overlaps == []


def run_key_on_clock(queue: WorkQueue, now: list[float], seconds: int = 40) -> None:
    """Work key "a" while the queue's clock ``now`` moves on a second at a time."""
    queue.start()
    queue.add("a")
    for step in range(1, seconds):
        now[0] = float(step)
        with queue._cond:
            queue._cond.notify_all()
        time.sleep(0.02)
    queue.stop()


def test_a_failing_key_comes_back_later_and_later() -> None:
    now = [0.0]
    times: list[float] = []

    def failing(key: Hashable) -> Outcome:
        times.append(now[0])
        raise RuntimeError("the API server is down")

    queue = WorkQueue(failing, workers=1, base_delay=1.0, max_delay=4.0, clock=lambda: now[0])
    run_key_on_clock(queue, now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [1.0, 2.0, 4.0] and set(gaps[3:]) <= {4.0}


def test_a_deadline_due_sooner_cuts_a_backoff_short() -> None:
    """A FineTuneJob waiting on something unwatched backs off, but its startup deadline
    (retry_after) is looked at when it falls due, not a full backoff later."""
    now = [0.0]
    times: list[float] = []

    def waiting(key: Hashable) -> Outcome:
        times.append(now[0])
        return Outcome(backoff=True, retry_after=3.0)

    queue = WorkQueue(waiting, workers=1, base_delay=1.0, max_delay=60.0, clock=lambda: now[0])
    run_key_on_clock(queue, now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:2] == [1.0, 2.0] and set(gaps[2:]) == {3.0}


def test_a_retry_after_is_kept_once_however_often_it_is_asked() -> None:
    calls = []
    queue = WorkQueue(lambda key: calls.append(key) or Outcome(retry_after=0.2), workers=1)
    queue.start()
    for _ in range(10):
        queue.add_after("a", 0.2)
    time.sleep(0.35)
    queue.stop()
    assert 1 <= calls.count("a") <= 3
    assert len(queue._later) <= 2


def test_a_hung_reconcile_is_reported() -> None:
    now = [0.0]
    release = threading.Event()
    queue = WorkQueue(lambda key: release.wait(5) and DONE, workers=1, clock=lambda: now[0])
    queue.start()
    queue.add("a")
    wait_until(lambda: queue._active)
    now[0] = 100.0
    assert queue.stuck(limit=300) is None
    now[0] = 400.0
    assert queue.stuck(limit=300) == "reconcile: a reconcile has taken 400s"
    release.set()
    queue.stop()


def test_changes_within_the_settle_time_make_one_more_reconcile() -> None:
    now = [0.0]
    calls: list[float] = []
    queue = WorkQueue(
        lambda key: calls.append(now[0]) or DONE, workers=1, settle=0.5, clock=lambda: now[0]
    )
    queue.start()
    queue.add("a")
    wait_until(lambda: len(calls) == 1)
    for moment in (0.1, 0.2, 0.3):  # three events in quick succession
        now[0] = moment
        queue.add("a")
    time.sleep(0.1)
    assert len(calls) == 1  # they wait for the settle time
    now[0] = 0.6
    with queue._cond:
        queue._cond.notify_all()
    wait_until(lambda: len(calls) == 2)
    time.sleep(0.1)
    queue.add("b")  # another key is worked at once
    wait_until(lambda: len(calls) == 3)
    queue.stop()
    assert calls == [0.0, 0.6, 0.6]


def test_a_key_held_for_its_settle_time_wakes_an_idle_worker() -> None:
    # Real clock: the only worker waits with no deadline when nothing is due; a key put
    # off by its settle time must still be worked once that time has passed.
    calls: list[Hashable] = []
    queue = WorkQueue(lambda key: calls.append(key) or DONE, workers=1, settle=0.2)
    queue.start()
    queue.add("a")
    wait_until(lambda: len(calls) == 1)
    time.sleep(0.05)
    queue.add("a")
    wait_until(lambda: len(calls) == 2, timeout=2)
    queue.stop()


def busy_queue() -> tuple[WorkQueue, threading.Event, list[Hashable]]:
    """A one-worker queue busy with the key "busy" until the event is set; the keys it
    works, in order."""
    release = threading.Event()
    calls: list[Hashable] = []

    def handler(key: Hashable) -> Outcome:
        if key == "busy":
            release.wait(5)
        calls.append(key)
        return DONE

    queue = WorkQueue(handler, workers=1)
    queue.start()
    queue.add("busy")
    wait_until(lambda: queue._active)
    return queue, release, calls


def test_keys_added_first_go_ahead_of_the_others() -> None:
    queue, release, calls = busy_queue()
    for key in ("update-1", "update-2"):
        queue.add(key)
    queue.add("new", first=True)
    queue.add("update-1", first=True)  # already waiting: stays where it is
    release.set()
    wait_until(lambda: len(calls) == 4)
    queue.stop()
    assert calls == ["busy", "new", "update-1", "update-2"]


def test_a_stream_of_first_keys_does_not_starve_the_others() -> None:
    queue, release, calls = busy_queue()
    queue.add("update")
    for index in range(3 * FIRST_RUN):
        queue.add(f"new-{index}", first=True)
    release.set()
    wait_until(lambda: len(calls) == 3 * FIRST_RUN + 2)
    queue.stop()
    assert calls.index("update") == FIRST_RUN + 1  # after "busy" and one run of new keys


def test_a_key_worked_before_does_not_go_first() -> None:
    """Going first is for FineTuneJobs the queue has not met: one just worked, failed or
    not, waits out its settle time however it is added."""
    now = [0.0]
    calls: list[Hashable] = []

    def handler(key: Hashable) -> Outcome:
        calls.append(key)
        return Outcome(backoff=key == "failing")

    queue = WorkQueue(handler, workers=1, settle=5.0, base_delay=60.0, clock=lambda: now[0])
    queue.start()
    queue.add("failing", first=True)
    queue.add("settling", first=True)
    wait_until(lambda: queue.processed == 2)
    queue.add("failing", first=True)
    queue.add("settling", first=True)
    time.sleep(0.2)
    assert calls == ["failing", "settling"]
    with queue._cond:
        now[0] = 6.0  # past the settle time
        queue._cond.notify_all()
    wait_until(lambda: queue.processed == 4)
    queue.stop()
    assert calls == ["failing", "settling", "failing", "settling"]


def test_a_key_whose_object_is_gone_leaves_nothing() -> None:
    queue = WorkQueue(lambda key: GONE if key == "deleted" else DONE, workers=1, settle=5.0)
    queue.start()
    queue.add("kept")
    queue.add("deleted")
    wait_until(lambda: queue.processed == 2)
    queue.stop()
    assert list(queue._worked) == ["kept"]
