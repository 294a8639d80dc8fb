"""Divergence: training whose loss or gradient norm has left the numbers, or (opt-in,
``training.divergence``) climbed past a limit, is stopped at once as ``Diverged``.

The check runs on the values Trainer logs. It raises out of the training loop from the
logging callback, before Trainer would save at that step, so no checkpoint of the diverged
state is ever written: the newest complete checkpoint stays the resume point. A checkpoint
step is always a logging step too (``DivergenceWatch.step_end``), so every checkpoint is
written only after the loss up to it was checked. The exit is bad input (exit 78, never
retried): the same data and settings diverge again.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from finetune_api.config import TrainingSpec
from finetune_api.contract import TrainerReason

from .errors import InvalidInput

log = logging.getLogger(__name__)


class Diverged(InvalidInput):
    reason = TrainerReason.DIVERGED


class DivergenceWatch:
    """The rules of ``training`` applied to each logged loss and gradient norm (free of
    transformers, so it can be driven with plain values).

    ``fp16``: under fp16 mixed precision the loss scaler meets infinite gradients on
    purpose (it lowers the scale and skips that step), so a non-finite gradient norm is not
    divergence there; the loss still is."""

    def __init__(self, training: TrainingSpec, *, fp16: bool = False) -> None:
        self.training = training
        self.rules = training.divergence
        self.fp16 = fp16
        self.lowest: float | None = None
        self.rising = 0  # consecutive logging steps above riseFactor x lowest

    def check(self, step: int, loss: float | None, grad_norm: float | None) -> None:
        """Raise Diverged when the values logged at ``step`` say training diverged."""
        if loss is not None and not math.isfinite(loss):
            self._diverged(step, f"the training loss is {_number(loss)}")
        if grad_norm is not None and not math.isfinite(grad_norm) and not self.fp16:
            self._diverged(step, f"the gradient norm is {_number(grad_norm)}")
        if loss is None:
            return
        max_loss = self.rules.max_loss
        if max_loss is not None and loss > max_loss:
            self._diverged(
                step,
                f"the training loss {_number(loss)} is above training.divergence.maxLoss "
                f"({_number(max_loss)})",
                limits="raise training.divergence.maxLoss if such a loss is expected",
            )
        self._check_rise(step, loss)
        self.lowest = loss if self.lowest is None else min(self.lowest, loss)

    def _check_rise(self, step: int, loss: float) -> None:
        factor = self.rules.rise_factor
        if factor is None or self.lowest is None:
            return
        if loss <= factor * self.lowest:
            self.rising = 0
            return
        self.rising += 1
        patience = self.rules.patience_steps
        if self.rising >= patience:
            self._diverged(
                step,
                f"the training loss {_number(loss)} has stayed above "
                f"training.divergence.riseFactor ({_number(factor)}) times its lowest "
                f"({_number(self.lowest)}) for {self.rising} logging steps",
                limits="raise training.divergence.riseFactor or patienceSteps if such a rise "
                "is expected",
            )

    def _diverged(self, step: int, what: str, *, limits: str | None = None) -> None:
        training = self.training
        advice = (
            f"lower training.learningRate (now {_number(training.learning_rate)}), raise "
            f"training.warmupSteps (now {training.warmup_steps}) or lower "
            f"training.maxGradNorm (now {_number(training.max_grad_norm)}), with a new "
            "output location since these settings change what a checkpoint means"
        )
        if limits is not None:
            advice = f"{advice}; or {limits} (the run then resumes from its newest checkpoint)"
        raise Diverged(
            f"training diverged at step {step}: {what}; no checkpoint of this step was "
            f"written. To fix: {advice}"
        )

    def step_end(self, control: Any) -> None:
        """Make a checkpoint step a logging step, so the loss up to it is checked before
        the checkpoint is written (Trainer logs, then saves, at the same step)."""
        if control.should_save:
            control.should_log = True

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        if "loss" not in logs:
            return
        self.check(int(state.global_step), _float(logs.get("loss")), _float(logs.get("grad_norm")))


def _number(value: float) -> str:
    """``value`` as the message shows it: nan, inf, -inf, or four significant digits."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def make_divergence_callback(watch: DivergenceWatch) -> Any:
    """The TrainerCallback that applies ``watch``. Add it after the run's own callback, so
    the diverged values are still published and printed before training stops."""
    from transformers import TrainerCallback

    class _DivergenceCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            watch.step_end(control)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            watch.on_log(state, dict(logs or {}))

    return _DivergenceCallback()
