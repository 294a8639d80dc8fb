"""Divergence: a non-finite loss or gradient norm, or (opt-in) a loss past
training.divergence's limits, stops the run at once as Diverged (exit 78), keeping the
checkpoint from before and writing none of the diverged state."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig, TrainingSpec
from finetune_api.contract import ExitCode, TrainerReason
from finetune_trainer.divergence import Diverged, DivergenceWatch
from finetune_trainer.runtime import RuntimeOptions
from finetune_trainer.storage.manifest import verify_dir
from finetune_trainer.termination import exit_code_for
from finetune_trainer.train import TrainingRun
from finetune_trainer.trl_args import sft_config_kwargs

from .train_helpers import tiny_config


def watch(**divergence: Any) -> DivergenceWatch:
    training = TrainingSpec.model_validate({"learningRate": 0.5, "divergence": divergence})
    return DivergenceWatch(training)


def diverged(rules: DivergenceWatch, step: int, loss: float | None, grad: float | None) -> str:
    with pytest.raises(Diverged) as caught:
        rules.check(step, loss, grad)
    assert caught.value.reason == TrainerReason.DIVERGED
    return str(caught.value)


# --- the rules, on logged values -----------------------------------------------------------


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_diverges_at_once(loss: float) -> None:
    rules = watch()
    rules.check(1, 2.5, 0.9)
    text = diverged(rules, 2, loss, 0.9)
    assert text.startswith(f"training diverged at step 2: the training loss is {loss}".lower())
    assert "training.learningRate (now 0.5)" in text
    assert "training.warmupSteps (now 5)" in text and "training.maxGradNorm (now 1)" in text


def test_a_non_finite_gradient_norm_diverges_except_under_fp16_loss_scaling() -> None:
    text = diverged(watch(), 7, 2.0, math.inf)
    assert "step 7: the gradient norm is inf" in text
    # The fp16 loss scaler meets infinite gradients on purpose and skips that step.
    training = TrainingSpec.model_validate({})
    DivergenceWatch(training, fp16=True).check(7, 2.0, math.inf)
    with pytest.raises(Diverged):
        DivergenceWatch(training, fp16=True).check(7, math.nan, math.inf)


def test_finite_values_never_diverge_without_limits() -> None:
    rules = watch()
    for step, loss in enumerate([2.0, 0.5, 40.0, 1e5, 3.0], start=1):
        rules.check(step, loss, 1e6)


def test_max_loss() -> None:
    rules = watch(maxLoss=8)
    rules.check(1, 8.0, 1.0)  # at the limit is not above it
    text = diverged(rules, 2, 8.5, 1.0)
    assert "step 2: the training loss 8.5 is above training.divergence.maxLoss (8)" in text
    assert "raise training.divergence.maxLoss" in text


def test_rise_past_a_factor_of_the_lowest_for_patience_steps() -> None:
    rules = watch(riseFactor=2, patienceSteps=3)
    for step, loss in enumerate([4.0, 2.0, 1.0, 2.5, 2.6, 1.5, 2.1, 2.2], start=1):
        rules.check(step, loss, 1.0)  # never three in a row above 2 x 1.0
    text = diverged(rules, 9, 2.4, 1.0)  # the third in a row
    assert "step 9: the training loss 2.4 has stayed above training.divergence.riseFactor (2)" in (
        text
    )
    assert "times its lowest (1) for 3 logging steps" in text
    assert "raise training.divergence.riseFactor or patienceSteps" in text


def test_the_rise_rule_is_off_until_a_factor_is_set() -> None:
    rules = watch(patienceSteps=1)
    for step, loss in enumerate([1.0, 50.0, 60.0, 70.0], start=1):
        rules.check(step, loss, 1.0)


def test_a_checkpoint_step_is_a_logging_step() -> None:
    """Trainer logs before it saves at a step: logging at every checkpoint step means no
    checkpoint is written before the loss up to it was checked."""
    rules = watch()
    saving = SimpleNamespace(should_save=True, should_log=False)
    rules.step_end(saving)
    assert saving.should_log
    plain = SimpleNamespace(should_save=False, should_log=False)
    rules.step_end(plain)
    assert not plain.should_log


def test_trainer_logs_non_finite_losses_as_they_are() -> None:
    """Trainer's default would log the running mean in place of a non-finite loss."""
    kwargs = sft_config_kwargs(
        TrainingSpec.model_validate({}),
        output_dir=Path("/tmp/out"),
        max_length=256,
        optimizer="adamw_torch",
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
    )
    assert kwargs["logging_nan_inf_filter"] is False


# --- the schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("divergence", "field"),
    [
        ({"maxLoss": 0}, "maxLoss"),
        ({"riseFactor": 1}, "riseFactor"),
        ({"riseFactor": 1e4}, "riseFactor"),
        ({"patienceSteps": 0}, "patienceSteps"),
        ({"maxloss": 3}, "maxloss"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(divergence: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingSpec.model_validate({"divergence": divergence})
    assert field in str(caught.value)


def test_limits_do_not_change_what_a_checkpoint_means() -> None:
    plain = TrainerConfig.from_mapping({})
    limited = TrainerConfig.from_mapping(
        {"training": {"divergence": {"maxLoss": 5, "riseFactor": 3, "patienceSteps": 2}}}
    )
    assert limited.training.divergence.max_loss == 5
    assert plain.fingerprint() == limited.fingerprint()
    assert plain.legacy_fingerprint() == limited.legacy_fingerprint()


# --- a real training run --------------------------------------------------------------------


def _poison_after(step: int) -> Any:
    """A callback that makes the adapter's weights non-finite once ``step`` is done and
    checkpointed: the state a numerical blow-up leaves behind. (The tiny model in float32
    does not overflow at any learning rate the schema allows: its normalization and gpt-oss's
    clamped activations keep every value finite, the loss saturating near ln(vocab).)"""
    import torch
    from transformers import TrainerCallback

    class _Poison(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step != step:
                return
            model = kwargs["model"]
            with torch.no_grad():
                for name, weight in model.named_parameters():
                    if "lora_B" in name:
                        weight.fill_(math.inf)

    return _Poison()


def test_a_run_whose_loss_turns_non_finite_ends_diverged_keeping_the_checkpoint_before(
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    # Checkpoints every 2 steps, logs every 3: step 4's checkpoint falls between logging
    # steps, so only the forced log at a checkpoint step catches the loss before it is saved.
    config = TrainerConfig.from_mapping(
        tiny_config(tiny_model_dir, tiny_dataset_path, str(out), saveSteps=2, loggingSteps=3)
    )
    build = TrainingRun._build_trainer

    def build_trainer(self: TrainingRun, *args: Any) -> Any:
        trainer = build(self, *args)
        trainer.add_callback(_poison_after(3))
        return trainer

    monkeypatch.setattr(TrainingRun, "_build_trainer", build_trainer)
    message = TrainingRun(config, RuntimeOptions(scratch_dir=tmp_path / "scratch")).execute()

    assert exit_code_for(message) == ExitCode.INVALID_INPUT == 78
    assert message.status == "invalid_input" and message.reason == TrainerReason.DIVERGED
    text = message.message
    assert text.startswith("training diverged at step 4: the training loss is nan"), text
    assert "no checkpoint of this step was written" in text
    assert "lower training.learningRate (now 0.01)" in text
    assert "(checkpoint-2, from before the divergence, is kept)" in text
    assert message.checkpoint is not None and message.checkpoint.step == 2
    assert message.checkpoint.uri == str(out / "checkpoint-2")

    # The checkpoint from before is complete and intact; nothing of step 4 or later exists.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["checkpoint-2"]
    verify_dir(out / "checkpoint-2")
    # Steps 2 and 4 are logged as checkpoint steps; the diverged one still is (its loss as
    # null: JSON has no NaN) before the stop.
    records = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"step"' in line
    ]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] is None and math.isfinite(records[0]["loss"])
