"""The parts of one operator, wired together as the operator runs them."""

from __future__ import annotations

from kubernetes import client

from finetune_operator.config import OperatorConfig
from finetune_operator.operator_runtime import SETTLE_SECONDS, OperatorRuntime, reconcile_limit


def runtime_for(config: OperatorConfig) -> OperatorRuntime:
    return OperatorRuntime.build(client.ApiClient(client.Configuration()), config)


def test_the_parts_share_one_cache_queue_and_event_recorder() -> None:
    runtime = runtime_for(OperatorConfig(namespaces=("ml",), resync_seconds=60))
    assert runtime.queue.settle == SETTLE_SECONDS
    assert runtime.queue.handler == runtime.reconciler.reconcile
    assert runtime.reconciler.events is runtime.events
    assert runtime.reconciler.cache is runtime.cache is runtime.resync.cache
    assert runtime.resync.namespaces == ("ml",) and runtime.resync.interval == 60


def test_events_are_counted_when_posted_and_when_dropped() -> None:
    runtime = runtime_for(OperatorConfig())
    assert runtime.events.on_posted is not None and runtime.events.on_dropped is not None
    runtime.events.on_posted("Normal", "JobCreated")
    runtime.events.on_dropped()
    sample = runtime.metrics.registry.get_sample_value
    assert sample("finetune_operator_events_total", {"type": "Normal", "reason": "JobCreated"}) == 1
    assert sample("finetune_operator_events_dropped_total") == 1


def test_a_hung_reconcile_is_judged_by_the_api_timeouts() -> None:
    quick = OperatorConfig(api_connect_timeout=1, api_read_timeout=2)
    slow = OperatorConfig(api_connect_timeout=10, api_read_timeout=120)
    assert reconcile_limit(quick) == 60  # never less than a minute
    assert reconcile_limit(slow) == 2 * 4 * (2 * 10 + 120)
    assert runtime_for(slow).health.reconcile_limit == reconcile_limit(slow)
