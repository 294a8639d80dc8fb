"""One read of a trainer's metrics: a total deadline, a size cap and a maintained parser,
against real sockets."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from finetune_operator.scrape import MAX_BODY_BYTES, bounded_number, parse_progress, scrape

from .metrics_servers import flood, free_port, healthy, redirect, serving, slow_drip, slow_loris


def read(port: int, deadline: float = 2.0) -> tuple[object, float]:
    async def go() -> object:
        async with aiohttp.ClientSession() as session:
            return await scrape(session, "127.0.0.1", deadline=deadline, port=port)

    began = time.monotonic()
    result = asyncio.run(go())
    return result, time.monotonic() - began


def test_a_healthy_endpoint_is_read() -> None:
    port = free_port()
    with serving("127.0.0.1", port, healthy, step=7):
        progress, _ = read(port)
    assert progress is not None
    assert (progress.step, progress.total_steps, progress.loss) == (7, 20, 1.5)  # type: ignore[attr-defined]


def test_a_slow_drip_costs_the_deadline_and_no_more() -> None:
    # A per-read socket timeout never trips on one byte a second; the total deadline does.
    port = free_port()
    with serving("127.0.0.1", port, slow_drip):
        progress, took = read(port, deadline=1.5)
    assert progress is None
    assert 1.4 < took < 3.0


def test_a_body_announced_over_the_cap_is_not_read() -> None:
    port = free_port()
    with serving("127.0.0.1", port, slow_loris):
        progress, took = read(port, deadline=10)
    assert progress is None
    assert took < 2.0


def test_a_flood_is_cut_at_the_cap() -> None:
    port = free_port()
    with serving("127.0.0.1", port, flood):
        progress, took = read(port, deadline=10)
    assert progress is None
    assert took < 5


def test_a_redirect_is_not_followed() -> None:
    # Following it would make the operator fetch any address a tenant names.
    port = free_port()
    with serving("127.0.0.1", port, redirect) as server:
        progress, _ = read(port)
    assert progress is None
    assert server.requests == 1


def test_nothing_listening_is_no_progress() -> None:
    progress, took = read(free_port())
    assert progress is None and took < 2


def test_the_parser_takes_only_the_contracts_plain_gauges() -> None:
    text = (
        "# HELP finetune_step Optimizer steps.\n# TYPE finetune_step gauge\nfinetune_step 12\n"
        "finetune_loss NaN\n"
        'finetune_total_steps{pod="x"} 99\n'
        "finetune_tokens_per_second +Inf\n"
        "finetune_learning_rate 2e-4\n"
        "finetune_epoch 1e300\n"
        "other_metric 5\n"
    )
    progress = parse_progress(text)
    assert progress.step == 12
    assert progress.learning_rate == 2e-4
    assert progress.loss is None  # not set yet
    assert progress.total_steps is None  # labelled: not the contract's
    assert progress.tokens_per_second is None and progress.epoch is None  # not a run's numbers


def test_garbage_keeps_what_came_before_it() -> None:
    assert parse_progress("finetune_step 3\n{{{ not prometheus\n").step == 3
    assert parse_progress("\x00\x01" * 100).step is None
    assert parse_progress("x" * MAX_BODY_BYTES).step is None


def test_one_rule_for_every_number_a_trainer_reports() -> None:
    assert bounded_number(12.0, int) == 12 and isinstance(bounded_number(12.0, int), int)
    assert bounded_number(-0.5, float) == -0.5
    for nothing in (float("nan"), float("inf"), -float("inf")):
        assert bounded_number(nothing, float) is None and bounded_number(nothing, int) is None
    assert bounded_number(2**53, int) == 2**53
    assert bounded_number(2**63, int) is None  # past int64: a status the API server refuses
    assert bounded_number(10**400, int) is None  # past any float
    assert bounded_number(1e31, float) is None


def test_the_eval_loss_gauge_is_read_and_bounded() -> None:
    text = (
        "# TYPE finetune_eval_loss gauge\nfinetune_eval_loss 1.5\n"
        "# TYPE finetune_step gauge\nfinetune_step 4.0\n"
    )
    assert parse_progress(text).eval_loss == 1.5
    assert parse_progress(text.replace("1.5", "NaN")).eval_loss is None
    assert parse_progress(text.replace("1.5", "1e300")).eval_loss is None
