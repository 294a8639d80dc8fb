"""SIGTERM handling phases."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from finetune_trainer.signals import Interrupted, StopRequest


def test_sigterm_before_training_interrupts_at_once() -> None:
    stop = StopRequest()
    stop.install()
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # give the handler a bytecode boundary to run at
    finally:
        stop.uninstall()
    assert stop.requested


def test_sigterm_during_training_only_asks_for_a_stop() -> None:
    stop = StopRequest()
    stop.install()
    try:
        with stop.during("training"):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.signal_name == "SIGTERM"
            # A second signal means "now".
            with pytest.raises(Interrupted):
                os.kill(os.getpid(), signal.SIGTERM)
        with stop.during("finishing"):
            os.kill(os.getpid(), signal.SIGTERM)  # noted, not raised
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_sigterm_while_preparing_data_stays_an_interruption(
    policy: str, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row checks catch exceptions to name the bad row; a preemption is not a bad row, and
    with invalidRowPolicy skip it must not silently drop a row either."""
    import datasets

    from finetune_api.config import TrainerConfig
    from finetune_trainer.data import prepare_dataset
    from finetune_trainer.fixtures import generate_rows

    config = TrainerConfig.from_mapping({"dataset": {"path": "/data", "invalidRowPolicy": policy}})
    rows = datasets.Dataset.from_list(generate_rows(6, seed=3))

    render = tiny_tokenizer.apply_chat_template
    calls = []

    def preempted_midway(*args: Any, **kwargs: Any) -> Any:
        """The kubelet's SIGTERM arrives during the 3rd row's render."""
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)
        return render(*args, **kwargs)

    monkeypatch.setattr(tiny_tokenizer, "apply_chat_template", preempted_midway)
    stop = StopRequest()
    stop.install()
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            prepare_dataset(rows, tiny_tokenizer, config)
    finally:
        stop.uninstall()
