"""How a training run ends when the GPU runs out of memory, or when a stop signal arrives
while it closes: in this process, with what would need a GPU or a long run replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from finetune_trainer.config import TrainerConfig
from finetune_trainer.contract import CheckpointRef, ExitCode
from finetune_trainer.microbatch import MicroBatchPlan
from finetune_trainer.runtime import RuntimeOptions
from finetune_trainer.termination import exit_code_for
from finetune_trainer.train import TrainingRun, out_of_memory_message

from .train_helpers import tiny_config

OOM_TEXT = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.12 GiB "
    "memory in use. Of the allocated memory 75.01 GiB is allocated by PyTorch, and 2.11 GiB "
    "is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try "
    "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)


class FakeBackend:
    description = "a GPU that is not there"

    def load(self, *_: Any) -> tuple[Any, Any]:
        return object(), None


class OutOfMemoryTrainer:
    def train(self, resume_from_checkpoint: str | None = None) -> None:
        raise torch.OutOfMemoryError(OOM_TEXT)


def test_out_of_memory_in_training_exits_78_naming_what_to_change(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainerConfig.from_mapping(
        tiny_config(tiny_model_dir, tiny_dataset_path, str(tmp_path / "out"))
    )
    assert config.training.per_device_train_batch_size == 2

    def build_trainer(self: TrainingRun, *_: Any) -> OutOfMemoryTrainer:
        # The automatic micro-batch folded the accumulation in: 4 rows at once.
        self.micro = MicroBatchPlan(4, 1, "largest micro-batch within the memory budget")
        return OutOfMemoryTrainer()

    monkeypatch.setattr("finetune_trainer.backends.select_backend", lambda *_: FakeBackend())
    monkeypatch.setattr(TrainingRun, "_build_trainer", build_trainer)
    runtime = RuntimeOptions(scratch_dir=tmp_path / "scratch")
    message = TrainingRun(config, runtime).execute()

    assert exit_code_for(message) == ExitCode.INVALID_INPUT
    assert message.status == "invalid_input" and message.reason == "OutOfMemory"
    text = message.message
    assert "GPU out of memory while training" in text and "Tried to allocate 2.00 GiB" in text
    assert "PYTORCH_CUDA_ALLOC_CONF" not in text  # the allocator's advice is left to the log
    assert "training.autoMicroBatch to false" in text and "ran 4 sequences" in text
    assert "model.maxSeqLength (now 256)" in text
    assert "training.perDeviceTrainBatchSize (now 2)" in text
    assert "training.gradientAccumulationSteps (now 2)" in text
    assert '"Memory guidance" in trainer/README.md' in text
    assert message.total_steps == 12


def test_out_of_memory_elsewhere_names_its_own_fix() -> None:
    config = TrainerConfig.from_mapping(
        {"model": {"loadIn4bit": False}, "output": {"mergedExport": "merged_16bit"}}
    )
    oom = torch.OutOfMemoryError(OOM_TEXT)
    loading = out_of_memory_message(config, "loading", None, oom)
    assert "while loading the model" in loading and "model.loadIn4bit to true" in loading
    merging = out_of_memory_message(config, "finishing", None, oom)
    assert "exporting the merged 16-bit model" in merging
    assert "output.mergedExport to none" in merging
    # Micro-batch 1 as configured: nothing to say about the batch but the sequence length.
    training = out_of_memory_message(config, "training", MicroBatchPlan(1, 4, "as configured"), oom)
    assert "model.maxSeqLength" in training
    assert "autoMicroBatch" not in training and "perDeviceTrainBatchSize" not in training


class SlowPublishing:
    """An output target whose final upload is where the kubelet's SIGTERM lands."""

    closed = False

    def close(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # give the handler a bytecode boundary to run at
        self.closed = True


def test_a_stop_signal_while_closing_is_noted_and_the_result_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = SlowPublishing()

    def train(self: TrainingRun) -> Any:
        self.target = target  # type: ignore[assignment]
        return self.progress.message("succeeded", "Completed", "trained 12 steps")

    monkeypatch.setattr(TrainingRun, "_train", train)
    before = signal.getsignal(signal.SIGTERM)
    run = TrainingRun(TrainerConfig.from_mapping({}), RuntimeOptions(scratch_dir=tmp_path))
    message = run.execute()

    assert message.status == "succeeded" and message.reason == "Completed"
    assert target.closed and run.stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


class UploadFinishingOnClose:
    """An S3-like target: a checkpoint committed before the failure becomes durable only
    when closing waits for its upload; ``fails`` makes that upload fail instead."""

    def __init__(self, run: TrainingRun, fails: bool = False) -> None:
        self.run = run
        self.fails = fails

    def close(self) -> None:
        if self.fails:
            raise OSError("upload failed: connection reset")
        self.run.progress.checkpoint = CheckpointRef(step=10, uri="s3://b/run/checkpoint-10")


def _failing_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool) -> TrainingRun:
    def train(self: TrainingRun) -> Any:
        self.target = UploadFinishingOnClose(self, fails)  # type: ignore[assignment]
        raise RuntimeError("NCCL watchdog timeout")

    monkeypatch.setattr(TrainingRun, "_train", train)
    return TrainingRun(TrainerConfig.from_mapping({}), RuntimeOptions(scratch_dir=tmp_path))


def test_a_failure_reports_the_checkpoint_that_became_durable_while_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _failing_run(tmp_path, monkeypatch, fails=False).execute()
    assert message.status == "failed" and message.reason == "TrainingFailed"
    assert message.checkpoint is not None and message.checkpoint.step == 10
    assert message.message == (
        "RuntimeError: NCCL watchdog timeout (the next attempt resumes from checkpoint-10)"
    )


def test_output_that_could_not_be_published_keeps_a_temporary_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _failing_run(tmp_path, monkeypatch, fails=True)
    message = run.execute()
    assert message.checkpoint is None and "resumes from" not in message.message
    assert run.runtime.keep_scratch
