"""The liveness verdict: a hung reconcile, a poller that stopped, or a stuck watch."""

from __future__ import annotations

import pytest

from finetune_operator.cache import ClusterCache
from finetune_operator.health import Health
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.poller import ProgressPoller
from finetune_operator.progress import ProgressBoard
from finetune_operator.workqueue import DONE, WorkQueue

from .cluster_objects import finetunejob


def parts(now: list[float]) -> Health:
    cache = ClusterCache(echo_deadline=150, clock=lambda: now[0])
    poller = ProgressPoller(
        cache,
        ProgressBoard(),
        lambda k: None,
        OperatorMetrics(),
        interval=10,
        deadline=3,
        clock=lambda: now[0],
    )
    queue = WorkQueue(lambda key: DONE, workers=1, clock=lambda: now[0])
    return Health(queue, poller, cache, reconcile_limit=300, poll_limit=120)


def test_healthy_reports_what_it_holds() -> None:
    health = parts([0.0])
    assert health.problems() == []
    assert health.report() == {
        "cached": {"finetunejobs": 0, "jobs": 0, "pods": 0},
        "queued": 0,
        "reconciled": 0,
    }


def test_each_stall_is_named_in_the_log_but_no_finetunejob_in_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    health = parts(now)
    health.poller._started = 0.0
    written = finetunejob("run")
    written["metadata"]["resourceVersion"] = "99"
    health.cache.record_write(written, "the status of FineTuneJob ml/run")
    with health.queue._cond:
        health.queue._active["ml/stuck"] = 0.0
    now[0] = 400.0
    problems = health.problems()
    assert len(problems) == 3
    assert problems[0] == "reconcile: a reconcile has taken 400s"
    assert "progress poller" in problems[1]
    assert problems[2].startswith("a watch has not delivered the operator's own writes")
    assert not any("ml/" in problem for problem in problems)
    assert "reconciling ml/stuck has taken 400s" in caplog.text
    assert "the status of FineTuneJob ml/run" in caplog.text
