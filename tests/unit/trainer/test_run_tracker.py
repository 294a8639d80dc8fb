"""The training-loop callbacks' bookkeeping: when a checkpoint is reported, and how a stop
signal that arrives while a checkpoint is being written ends the run."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from finetune_api.contract import STAGE_LABEL, Metric, TrainerStage
from finetune_trainer.callbacks import RunTracker
from finetune_trainer.metrics import MetricsLog, MetricsServer
from finetune_trainer.run_progress import RunProgress
from finetune_trainer.signals import StopRequest
from finetune_trainer.storage.targets import LocalTarget, OutputTarget

from .test_checkpoints import write_fake_checkpoint


def make_tracker(
    target: OutputTarget, progress: RunProgress | None = None, stop: StopRequest | None = None
) -> RunTracker:
    return RunTracker(
        target=target,
        fingerprint="fp",
        progress=progress or RunProgress(),
        metrics=MetricsServer(),
        metrics_log=MetricsLog(io.StringIO()),
        stop=stop or StopRequest(),
        accounting=None,
        micro_batches_per_step=1,
    )


def reported_step(tracker: RunTracker) -> float | None:
    return tracker.metrics.registry.get_sample_value(Metric.CHECKPOINT_STEP)


def state(step: int, max_steps: int = 10) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=max_steps, epoch=0.5)


def control() -> SimpleNamespace:
    return SimpleNamespace(should_save=False, should_training_stop=False)


def save(tracker: RunTracker, step: int, max_steps: int = 10) -> SimpleNamespace:
    """What Trainer does at a save: write the checkpoint directory, then call on_save."""
    write_fake_checkpoint(tracker.target.artifacts, step)
    flow = control()
    tracker.on_save(state(step, max_steps), flow, tracker.target.artifacts.work_dir)
    return flow


@pytest.fixture
def local(tmp_path: Path) -> LocalTarget:
    target = LocalTarget(tmp_path / "out", str(tmp_path / "out"))
    target.prepare()
    return target


def test_a_local_checkpoint_is_reported_once_committed(local: LocalTarget) -> None:
    tracker = make_tracker(local)
    assert math.isnan(reported_step(tracker) or math.nan)
    flow = save(tracker, 4)
    assert tracker.progress.checkpoint is not None
    assert tracker.progress.checkpoint.step == 4
    assert tracker.progress.checkpoint.uri == local.uri("checkpoint-4")
    assert reported_step(tracker) == 4
    assert not flow.should_training_stop and not tracker.progress.interrupted


def test_a_stop_requested_during_a_save_stops_right_after_it(local: LocalTarget) -> None:
    """SIGTERM lands while Trainer writes checkpoint-4 (after step 4's step-end check): the
    checkpoint just written is the one the stop wants; no further step, no second save."""
    stop = StopRequest()
    tracker = make_tracker(local, stop=stop)
    commit = local.artifacts.commit

    def signalled_midway(*args: Any, **kwargs: Any) -> Any:
        stop.signal_name = "SIGTERM"  # what the handler records during training
        return commit(*args, **kwargs)

    local.artifacts.commit = signalled_midway  # type: ignore[method-assign]
    flow = save(tracker, 4)
    assert flow.should_training_stop
    assert tracker.progress.interrupted
    assert tracker.progress.checkpoint is not None and tracker.progress.checkpoint.step == 4

    # The step-end path, which then also sees the stop, asks for nothing more.
    later = control()
    tracker.step_end(state(5), later)
    assert not later.should_save


def test_a_stop_at_the_last_step_lets_the_run_finish(local: LocalTarget) -> None:
    stop = StopRequest()
    stop.signal_name = "SIGTERM"
    tracker = make_tracker(local, stop=stop)
    flow = save(tracker, 10, max_steps=10)
    assert not flow.should_training_stop and not tracker.progress.interrupted


def test_without_a_stop_training_goes_on(local: LocalTarget) -> None:
    tracker = make_tracker(local)
    flow = save(tracker, 4)
    assert not flow.should_training_stop and not tracker.progress.interrupted


def test_trainer_stops_at_the_save_during_which_the_stop_came(tmp_path: Path) -> None:
    """The real transformers loop honours the stop set in on_save: with saves every 2
    steps and SIGTERM during the save of step 2, training ends at step 2 with only
    checkpoint-2, instead of going on to step 3 and saving again."""
    import torch
    from transformers import Trainer, TrainingArguments

    from finetune_trainer.callbacks import make_callbacks

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)}

    target = LocalTarget(tmp_path / "out", str(tmp_path / "out"))
    target.prepare()
    stop = StopRequest()
    tracker = make_tracker(target, stop=stop)
    commit = target.artifacts.commit

    def signalled_during_first_save(*args: Any, **kwargs: Any) -> Any:
        stop.signal_name = "SIGTERM"
        return commit(*args, **kwargs)

    target.artifacts.commit = signalled_during_first_save  # type: ignore[method-assign]
    rows = [{"x": [float(i), 1.0, 0.0, -1.0], "y": float(i % 3)} for i in range(64)]
    args = TrainingArguments(
        output_dir=str(target.artifacts.work_dir),
        max_steps=10,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "x": torch.tensor([r["x"] for r in batch]),
            "y": torch.tensor([r["y"] for r in batch]),
        }

    trainer = Trainer(
        model=Tiny(),
        args=args,
        train_dataset=rows,
        data_collator=collate,
        callbacks=make_callbacks(tracker),
    )
    trainer.train()

    assert trainer.state.global_step == 2
    assert tracker.progress.interrupted
    assert [c.step for c in target.artifacts.checkpoints()] == [2]


def test_the_training_loop_step_count_is_reported_once_it_starts(
    local: LocalTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """The plan's count stands until the loop starts; a loop that counts differently (a
    backend patching it) is what decides when training stops, so progress follows it."""
    progress = RunProgress()
    progress.report.total_steps = 20
    tracker = make_tracker(local, progress)
    tracker.train_begin(state(0, max_steps=25))
    assert progress.report.total_steps == 25
    assert tracker.metrics.registry.get_sample_value(Metric.TOTAL_STEPS) == 25
    assert "the plan 20" in caplog.text


def test_the_stage_is_training_after_each_step_and_saving_while_a_checkpoint_is_written(
    local: LocalTarget,
) -> None:
    tracker = make_tracker(local)

    def stage() -> str:
        for current in TrainerStage:
            if tracker.metrics.registry.get_sample_value(Metric.STAGE, {STAGE_LABEL: current}):
                return current
        raise AssertionError("no stage set")

    tracker.train_begin(state(0))
    tracker.step_end(state(1), control())
    assert stage() == TrainerStage.TRAINING
    saving = control()
    saving.should_save = True
    tracker.step_end(state(2), saving)
    assert stage() == TrainerStage.SAVING
    save(tracker, 2)
    assert stage() == TrainerStage.TRAINING
    # An evaluation step, then its checkpoint: each a stage of its own.
    evaluating = control()
    evaluating.should_evaluate = evaluating.should_save = True
    tracker.step_end(state(4), evaluating)
    assert stage() == TrainerStage.EVALUATING
    evaluating.should_evaluate = False  # as Trainer's callback handler clears it
    tracker.evaluated(evaluating)
    assert stage() == TrainerStage.SAVING
