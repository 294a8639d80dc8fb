"""The progress poller on real sockets: a hostile endpoint costs one slot for its deadline,
never the round; what changed is queued, what did not is not."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import aiohttp

from finetune_operator.cache import ClusterCache
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.poller import ProgressPoller
from finetune_operator.progress import ProgressBoard

from .cluster_objects import finetunejob, job_of, pod_of
from .metrics_servers import free_port, healthy, just_in_time, serving, slow_drip, slow_loris


def trainers(cache: ClusterCache, count: int) -> list[str]:
    """``count`` running trainers at 127.0.0.2, .3, ...; their FineTuneJobs' names."""
    names = []
    for index in range(count):
        ftj = finetunejob(f"run-{index}")
        cache.upsert(ftj)
        cache.upsert(job_of(ftj))
        cache.upsert(pod_of(ftj, f"127.0.0.{index + 2}"))
        names.append(f"run-{index}")
    return names


def poller_for(
    cache: ClusterCache, board: ProgressBoard, changed: list, port: int, **kwargs
) -> ProgressPoller:
    settings = {"interval": 1.0, "deadline": 1.5, "concurrency": 8, **kwargs}
    return ProgressPoller(cache, board, changed.append, OperatorMetrics(), port=port, **settings)


def one_round(poller: ProgressPoller) -> float:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            await poller.poll_round(session)

    began = time.monotonic()
    asyncio.run(go())
    return time.monotonic() - began


def test_a_slow_loris_does_not_hold_up_fifty_healthy_trainers() -> None:
    cache, board, changed = ClusterCache(), ProgressBoard(), []
    names = trainers(cache, 51)
    port = free_port()
    with ExitStack() as stack:
        stack.enter_context(serving("127.0.0.2", port, slow_drip))  # run-0
        for index in range(1, 51):
            stack.enter_context(serving(f"127.0.0.{index + 2}", port, healthy, step=index))
        poller = poller_for(cache, board, changed, port)
        took = one_round(poller)
        # The slow endpoint held one of eight slots for its 1.5 s deadline; the fifty
        # others were read in the other slots meanwhile.
        assert took < 3.0
        # Every trainer is queued once: the fifty for their first reading, the silent one
        # for its first unanswered read (which sets its progress deadline).
        assert sorted(changed) == sorted(("ml", n) for n in names)
        for index in range(1, 51):
            reading = board.reading(("ml", f"run-{index}"), f"pod-run-{index}")
            assert reading is not None and reading.step == index
        assert board.reading(("ml", "run-0"), "pod-run-0") is None
        silent = board.watch(("ml", "run-0"), "pod-run-0")
        assert silent is not None and silent.silent_since is not None
        # Nothing changed: nothing is queued; the failing endpoint waits a round.
        changed.clear()
        took = one_round(poller)
        assert changed == [] and took < 1.0
        scrapes = poller.metrics.registry.get_sample_value
        assert scrapes("finetune_operator_scrapes_total", {"result": "failed"}) == 1
        assert scrapes("finetune_operator_scrapes_total", {"result": "skipped"}) == 1


def test_endpoints_that_answer_just_in_time_go_after_the_quick_ones() -> None:
    """Eight endpoints answer every time, a second late (inside the 1.5 s deadline): after
    the first round they read last, so they never hold the slots that the forty quick
    ones need."""
    cache, board, changed = ClusterCache(), ProgressBoard(), []
    trainers(cache, 48)
    port = free_port()
    with ExitStack() as stack:
        servers = []
        for index in range(48):
            behaviour = just_in_time if index < 8 else healthy
            servers.append(
                stack.enter_context(serving(f"127.0.0.{index + 2}", port, behaviour, step=1))
            )
        poller = poller_for(cache, board, changed, port)
        one_round(poller)  # the first round learns who is slow
        began = time.monotonic()
        one_round(poller)
        quick = [server.answered[-1] - began for server in servers[8:]]
        slow = [server.answered[-1] - began for server in servers[:8]]
        assert len(servers[8].answered) == 2 and max(quick) < 0.5
        assert min(slow) >= 1.0  # all read, each after the quick ones


def test_a_round_ends_at_its_budget() -> None:
    cache, board, changed = ClusterCache(), ProgressBoard(), []
    trainers(cache, 4)
    port = free_port()
    with ExitStack() as stack:
        for index in range(4):
            behaviour = slow_loris if index == 0 else slow_drip
            stack.enter_context(serving(f"127.0.0.{index + 2}", port, behaviour))
        poller = poller_for(cache, board, changed, port, deadline=30.0, budget=1.0)
        took = one_round(poller)
    assert took < 2.0
    scrapes = poller.metrics.registry.get_sample_value
    # One over the size cap, three cut off by the round's budget.
    assert scrapes("finetune_operator_scrapes_total", {"result": "failed"}) == 4
    assert poller.stuck(limit=60) is None


def test_only_the_jobs_own_running_pods_are_read() -> None:
    cache = ClusterCache()
    ftj = finetunejob("run")
    cache.upsert(ftj)
    cache.upsert(job_of(ftj))
    # A pod labelled as the trainer but made by another Job, and one not running yet.
    cache.upsert(pod_of(ftj, "127.0.0.2", job_uid="someone-elses-job", name="planted"))
    cache.upsert(pod_of(ftj, "127.0.0.3", running=False, name="starting"))
    assert cache.running_trainers() == []
    cache.upsert(pod_of(ftj, "127.0.0.4", name="trainer"))
    assert [t.pod_ip for t in cache.running_trainers()] == ["127.0.0.4"]


def test_a_reading_is_dropped_once_its_trainer_stops() -> None:
    cache, board, changed = ClusterCache(), ProgressBoard(), []
    trainers(cache, 1)
    port = free_port()
    with serving("127.0.0.2", port, healthy, step=5):
        poller = poller_for(cache, board, changed, port)
        one_round(poller)
        assert len(board) == 1
        cache.remove(pod_of(finetunejob("run-0"), "127.0.0.2"))
        one_round(poller)
    assert len(board) == 0


def test_the_poller_says_when_it_is_stuck() -> None:
    now = [100.0]
    poller = ProgressPoller(
        ClusterCache(),
        ProgressBoard(),
        lambda key: None,
        OperatorMetrics(),
        interval=10,
        deadline=3,
        clock=lambda: now[0],
    )
    assert poller.stuck(limit=120) is None  # not started
    poller._started = 100.0
    now[0] = 200.0
    assert poller.stuck(limit=120) is None
    now[0] = 300.0
    assert "has not finished a round for 200s" in (poller.stuck(limit=120) or "")
