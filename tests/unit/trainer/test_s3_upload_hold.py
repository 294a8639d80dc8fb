"""An S3 outage at the end of a run, against a real S3-compatible server (versitygw) that is
stopped and started again on the same port: the exit waits for the failed upload within
the grace period, and a checkpoint that never arrives is named with the reason."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from finetune_api.config import S3Location, TrainerConfig
from finetune_api.contract import CheckpointRef, ExitCode
from finetune_localcluster import s3server
from finetune_localcluster.ports import free_port
from finetune_localcluster.s3server import S3Server
from finetune_trainer.resume import find_resume_point
from finetune_trainer.runtime import RuntimeOptions
from finetune_trainer.storage.manifest import verify_dir
from finetune_trainer.storage.retry import RetryPolicy
from finetune_trainer.storage.s3 import S3Store
from finetune_trainer.storage.targets import S3Target, UploadFailed
from finetune_trainer.termination import exit_code_for
from finetune_trainer.train import TrainingRun

from .test_run_tracker import make_tracker, save
from .test_s3_output import publish_checkpoint, publish_final_model
from .test_train_endings import FakeBackend
from .train_helpers import tiny_config

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def server(
    localcluster_binaries: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3Server]:
    """A server of this test's own, which keeps its port (and data) when restarted."""
    port = free_port()
    monkeypatch.setattr(s3server, "free_port", lambda: port)
    own = S3Server(tmp_path / "s3", binaries=localcluster_binaries)
    own.start()
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", own.access_key)
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", own.secret_key)
    try:
        yield own
    finally:
        own.stop()


def wait_until_failed(target: S3Target) -> None:
    """Until the background upload gave up (its retries against a stopped server)."""
    deadline = time.monotonic() + 120
    while not target.unpublished_output:
        assert time.monotonic() < deadline, "the upload never failed"
        time.sleep(0.1)


@contextlib.contextmanager
def restarted_after(server: S3Server, delay: float) -> Iterator[None]:
    """Start ``server`` again ``delay`` seconds in, from a thread that lives until the
    block ends: the server process dies with the thread that started it."""
    errors: list[Exception] = []
    done = threading.Event()

    def restart() -> None:
        time.sleep(delay)
        try:
            server.start()
        except Exception as exc:
            errors.append(exc)
            return
        done.wait()
        server.stop()

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not errors


def s3_target(server: S3Server, bucket: str, staging: Path) -> S3Target:
    location = S3Location(
        uri=f"s3://{bucket}/runs/a", endpoint=server.endpoint, region=server.region
    )
    store = S3Store.for_location(location, "output", retry=FAST)
    target = S3Target(store, location.prefix, staging)
    target.prepare()
    return target


def test_the_exit_waits_for_s3_to_come_back_and_the_checkpoint_is_resumed(
    server: S3Server, tmp_path: Path
) -> None:
    bucket = server.create_bucket(f"hold-{uuid.uuid4().hex[:8]}")
    target = s3_target(server, bucket, tmp_path / "staging")
    publish_checkpoint(target, 10)
    target.uploads.flush()
    server.stop()  # S3 goes down mid-run
    publish_checkpoint(target, 20)
    wait_until_failed(target)  # staged only

    with restarted_after(server, 3.0):  # back within the grace period
        held_from = time.monotonic()
        target.hold_uploads = lambda: held_from + 60.0
        target.close()
        assert not target.unpublished_output
        assert target.lost_output() is None
        assert time.monotonic() - held_from >= 2.5  # it did wait for the server

        fresh = s3_target(server, bucket, tmp_path / "staging-2")  # a new pod, empty scratch
        point = find_resume_point(fresh, "fp")
        assert point is not None and point.step == 20
        fresh.close()


def test_a_checkpoint_that_never_arrives_is_named_with_the_reason(
    server: S3Server, tmp_path: Path
) -> None:
    bucket = server.create_bucket(f"hold-{uuid.uuid4().hex[:8]}")
    target = s3_target(server, bucket, tmp_path / "staging")
    publish_checkpoint(target, 10)
    target.uploads.flush()
    server.stop()
    publish_checkpoint(target, 20)
    wait_until_failed(target)
    held_from = time.monotonic()
    target.hold_uploads = lambda: held_from + 4.0
    with pytest.raises(UploadFailed, match="checkpoint-20"):
        target.close()
    waited = time.monotonic() - held_from
    assert 3.5 <= waited < 30
    lost = target.lost_output()
    assert lost is not None
    assert f"checkpoint-20 (step 20) never reached s3://{bucket}/runs/a/checkpoint-20" in lost
    assert "could not be reached" in lost or "unreachable" in lost or "reach" in lost
    assert "ends with the pod" in lost


def test_the_log_calls_the_final_adapter_complete_only_once_it_is_on_s3(
    server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bucket = server.create_bucket(f"hold-{uuid.uuid4().hex[:8]}")
    target = s3_target(server, bucket, tmp_path / "staging")
    server.stop()
    publish_final_model(target, 12)
    wait_until_failed(target)
    manifest = verify_dir(target.artifacts.root / "final_model")
    assert target.committed("final_model", manifest) == (
        f"final_model staged: 3 files in {target.artifacts.root / 'final_model'}; "
        f"uploading to s3://{bucket}/runs/a/final_model"
    )
    assert "final_model complete" not in caplog.text
    with restarted_after(server, 1.0):
        held_from = time.monotonic()
        target.hold_uploads = lambda: held_from + 60.0
        target.close()
    assert f"final_model complete: 3 files -> s3://{bucket}/runs/a/final_model" in caplog.text


class SigtermDuringAnOutage:
    """Trainer on S3 output: checkpoint-10 reaches S3; then S3 goes down, SIGTERM comes
    during step 20 and the checkpoint it asks for can only be staged."""

    state = SimpleNamespace(global_step=20)

    def __init__(self, run: TrainingRun, target: S3Target, server: S3Server) -> None:
        self.run = run
        self.target = target
        self.server = server

    def train(self, resume_from_checkpoint: str | None = None) -> None:
        tracker = make_tracker(self.target, progress=self.run.progress, stop=self.run.stop)
        save(tracker, 10, max_steps=30)
        self.target.uploads.flush()
        self.server.stop()
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # give the handler a bytecode boundary to run at
        save(tracker, 20, max_steps=30)


def sigterm_during_an_outage(
    server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    grace: float,
) -> tuple[TrainingRun, str]:
    bucket = server.create_bucket(f"hold-{uuid.uuid4().hex[:8]}")
    target = s3_target(server, bucket, tmp_path / "staging")
    config = TrainerConfig.from_mapping(
        tiny_config(tiny_model_dir, tiny_dataset_path, str(tmp_path / "unused"))
    )
    monkeypatch.setattr("finetune_trainer.train.make_target", lambda *_: target)
    monkeypatch.setattr("finetune_trainer.backends.select_backend", lambda *_: FakeBackend())
    monkeypatch.setattr(
        TrainingRun,
        "_build_trainer",
        lambda self, *_: SigtermDuringAnOutage(self, target, server),
    )
    runtime = RuntimeOptions(scratch_dir=tmp_path / "scratch", grace_period_seconds=grace)
    return TrainingRun(config, runtime), bucket


def test_sigterm_during_an_outage_holds_the_exit_until_the_checkpoint_is_uploaded(
    server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run, bucket = sigterm_during_an_outage(
        server, tmp_path, monkeypatch, tiny_model_dir, tiny_dataset_path, grace=90
    )
    with restarted_after(server, 8.0):  # S3 is back within the grace period
        message = run.execute()
        assert exit_code_for(message) == ExitCode.INTERRUPTED, message.message
        uri = f"s3://{bucket}/runs/a/checkpoint-20"
        assert message.checkpoint == CheckpointRef(step=20, uri=uri)
        assert "waiting up to" in caplog.text  # the upload had failed; the exit waited

        fresh = s3_target(server, bucket, tmp_path / "staging-2")  # a new pod, empty scratch
        point = find_resume_point(fresh, "fp")
        assert point is not None and point.step == 20
        fresh.close()


def test_sigterm_during_an_outage_that_outlasts_the_grace_period_names_the_lost_checkpoint(
    server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
) -> None:
    run, bucket = sigterm_during_an_outage(
        server, tmp_path, monkeypatch, tiny_model_dir, tiny_dataset_path, grace=9
    )
    message = run.execute()
    assert exit_code_for(message) == ExitCode.FAILED
    assert message.checkpoint is not None and message.checkpoint.step == 10
    text = message.message
    assert "the next attempt resumes from checkpoint-10" in text
    assert (
        f"lost: checkpoint-20 (step 20) never reached s3://{bucket}/runs/a/checkpoint-20 "
        "(output.s3.endpoint: could not get an answer" in text
    )
    assert "ends with the pod" in text
    assert run.stop.received_at is not None
