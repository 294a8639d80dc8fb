"""How a training run ends when the GPU runs out of memory, when a stop signal arrives
while it closes, when uploads fail, or when it had already finished: in this process, with
what would need a GPU or a long run replaced."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from finetune_api.config import TrainerConfig
from finetune_api.contract import CheckpointRef, ExitCode
from finetune_trainer.memory_plan import MemoryPlan
from finetune_trainer.out_of_memory import out_of_memory_message
from finetune_trainer.runtime import OUTPUT_STAGING, RuntimeOptions
from finetune_trainer.storage.checkpoints import LocalArtifacts
from finetune_trainer.storage.manifest import ArtifactKind
from finetune_trainer.termination import exit_code_for
from finetune_trainer.train import TrainingRun

from .test_checkpoints import write_fake_checkpoint
from .test_run_tracker import make_tracker, save
from .test_s3_output import FAST, publish_checkpoint
from .test_s3_output import make_target as make_s3_target
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
    offloads_embedding = True

    def memory_budget(self, fraction: float) -> float:
        return 80 * 2**30 * fraction  # an 80 GiB GPU: the tiny model fits any plan

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
    # The memory plan folded the accumulation in (4 rows at once) and, with room to spare,
    # turned gradient checkpointing off: both are named as what to change back.
    assert "training.autoMicroBatch to false" in text and "ran 4 sequences" in text
    assert "training.gradientCheckpointing to unsloth (auto turned it off" in text
    assert "model.offloadEmbedding to true (the plan kept the input embedding" in text
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
    plan = MemoryPlan(1, 4, "unsloth", True, "as configured")
    training = out_of_memory_message(config, "training", plan, oom)
    assert "model.maxSeqLength" in training
    assert "autoMicroBatch" not in training and "perDeviceTrainBatchSize" not in training
    assert "gradientCheckpointing" not in training
    # Checkpointing the user turned off is named; so is auto's choice, but only auto's.
    off = TrainerConfig.from_mapping({"training": {"gradientCheckpointing": "off"}})
    plan_off = MemoryPlan(1, 4, "off", True, "as configured")
    told = out_of_memory_message(off, "training", plan_off, oom)
    assert "turn training.gradientCheckpointing back on" in told and "auto turned" not in told


class SlowPublishing:
    """An output target whose final upload is where the kubelet's SIGTERM lands."""

    closed = False
    unpublished_output = False

    def lost_output(self) -> str | None:
        return None

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
        self.unpublished_output = fails

    def lost_output(self) -> str | None:
        return (
            "checkpoint-10 (step 10) never reached s3://b/run/checkpoint-10" if self.fails else None
        )

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
    assert message.message.endswith(
        "; lost: checkpoint-10 (step 10) never reached s3://b/run/checkpoint-10"
    )
    assert run.runtime.keep_scratch


@pytest.fixture
def s3_output(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and the output credentials to write it."""
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", s3_server.secret_key)
    return str(s3_server.create_bucket(f"out-{uuid.uuid4().hex[:10]}"))


def test_an_upload_failure_reported_before_closing_still_keeps_a_temporary_scratch(
    s3_server: Any, s3_output: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed upload already ended the run (a flush raised it, as after a stop signal),
    so closing has nothing left to wait for: the staged checkpoint must still be kept."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.setattr("finetune_trainer.runtime.SCRATCH_DIR", str(tmp_path / "no-pod-mount"))
    staged: list[Path] = []

    def train(self: TrainingRun) -> Any:
        staging = self.runtime.scratch() / OUTPUT_STAGING / s3_output / "runs" / "a"
        self.target = target = make_s3_target(s3_server, s3_output, staging, fail_first=100)
        publish_checkpoint(target, 10)
        staged.append(staging / "checkpoint-10")
        target.flush()

    monkeypatch.setattr(TrainingRun, "_train", train)
    run = TrainingRun(TrainerConfig.from_mapping({}), RuntimeOptions())
    message = run.execute()
    run.runtime.remove_own_scratch()

    assert message.status == "failed" and "UploadFailed" in message.message
    assert run.runtime.keep_scratch
    assert (staged[0] / "manifest.json").is_file()


class StoppedAfterAnOutage:
    """Trainer on S3 output: checkpoint-10 is saved during a short S3 outage; SIGTERM
    arrives during step 20 and asks for checkpoint-20, saved once S3 is back."""

    state = SimpleNamespace(global_step=20)

    def __init__(self, run: TrainingRun, target: Any) -> None:
        self.run = run
        self.target = target

    def train(self, resume_from_checkpoint: str | None = None) -> None:
        tracker = make_tracker(self.target, progress=self.run.progress, stop=self.run.stop)
        save(tracker, 10, max_steps=30)
        self.run.stop.signal_name = "SIGTERM"
        save(tracker, 20, max_steps=30)


def test_a_stop_checkpoint_uploaded_after_an_outage_still_exits_75(
    s3_server: Any,
    s3_output: str,
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = make_s3_target(s3_server, s3_output, tmp_path / "staging", fail_first=FAST.attempts)
    config = TrainerConfig.from_mapping(
        tiny_config(tiny_model_dir, tiny_dataset_path, str(tmp_path / "unused"))
    )
    monkeypatch.setattr("finetune_trainer.train.make_target", lambda *_: target)
    monkeypatch.setattr("finetune_trainer.backends.select_backend", lambda *_: FakeBackend())
    monkeypatch.setattr(
        TrainingRun, "_build_trainer", lambda self, *_: StoppedAfterAnOutage(self, target)
    )
    runtime = RuntimeOptions(scratch_dir=tmp_path / "scratch")
    message = TrainingRun(config, runtime).execute()

    assert exit_code_for(message) == ExitCode.INTERRUPTED
    assert message.status == "interrupted", message.message
    uri = f"s3://{s3_output}/runs/a/checkpoint-20"
    assert message.checkpoint == CheckpointRef(step=20, uri=uri)
    assert (
        message.message == f"stopped by SIGTERM after step 20; checkpoint: checkpoint-20 at {uri}"
    )


def test_an_already_finished_run_names_its_newest_complete_checkpoint(tmp_path: Path) -> None:
    """checkpoint-20 is a directory whose save never finished (no manifest): the message
    must name checkpoint-10, the newest one a resume could use."""
    out = tmp_path / "out"
    config = TrainerConfig.from_mapping({"output": {"path": str(out)}})
    artifacts = LocalArtifacts(out)
    artifacts.prepare()
    committed: list[tuple[str, ArtifactKind, int]] = [
        ("checkpoint-10", "checkpoint", 10),
        ("final_model", "final_model", 20),
    ]
    for name, kind, step in committed:
        artifacts.commit(
            write_fake_checkpoint(artifacts, step),
            name,
            kind=kind,
            step=step,
            fingerprint=config.fingerprint(),
            started_at="2026-01-01T00:00:00Z",
        )
    (out / "checkpoint-20").mkdir()
    (out / "checkpoint-20" / "trainer_state.json").write_text("{}")

    message = TrainingRun(config, RuntimeOptions(scratch_dir=tmp_path / "scratch")).execute()

    assert message.status == "succeeded" and message.reason == "AlreadyCompleted"
    assert message.checkpoint == CheckpointRef(step=10, uri=f"{out}/checkpoint-10")
