"""SIGTERM handling phases."""

from __future__ import annotations

import os
import signal

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
