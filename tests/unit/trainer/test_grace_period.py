"""How long the exit may wait for failed uploads: the pod's grace period, read from the
environment, counted from the stop signal or from the first wait, less a margin."""

from __future__ import annotations

import time

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.runtime import RuntimeOptions, grace_period_from_env
from finetune_trainer.train import TrainingRun


def test_the_grace_period_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTO_GRACE_PERIOD_SECONDS", raising=False)
    assert grace_period_from_env() == 30.0  # Kubernetes' default
    monkeypatch.setenv("FTO_GRACE_PERIOD_SECONDS", "300")
    assert grace_period_from_env() == 300.0
    assert RuntimeOptions.from_env().grace_period_seconds == 300.0
    for bad in ("soon", "-5", "nan"):
        monkeypatch.setenv("FTO_GRACE_PERIOD_SECONDS", bad)
        with pytest.raises(ValueError, match="FTO_GRACE_PERIOD_SECONDS"):
            grace_period_from_env()


def run_with_grace(seconds: float) -> TrainingRun:
    return TrainingRun(TrainerConfig.from_mapping({}), RuntimeOptions(grace_period_seconds=seconds))


def test_after_a_stop_signal_the_deadline_counts_from_the_signal() -> None:
    run = run_with_grace(300)
    run.stop.received_at = time.monotonic() - 100
    assert run._upload_deadline() == pytest.approx(run.stop.received_at + 300 - 10)


def test_after_a_failure_it_counts_from_the_first_wait_and_a_later_signal_only_shortens_it() -> (
    None
):
    run = run_with_grace(30)
    before = time.monotonic()
    first = run._upload_deadline()
    assert before + 20 <= first <= time.monotonic() + 20  # 30 s less a third
    time.sleep(0.05)
    assert run._upload_deadline() == first  # not pushed back by asking again
    run.stop.received_at = time.monotonic()
    assert run._upload_deadline() == first
