"""An S3 outage at the end of a run, against a real S3-compatible server (versitygw) that is
stopped and started again on the same port: the exit waits for the failed upload within
the grace period, and a checkpoint that never arrives is named with the reason."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import S3Location
from finetune_localcluster import s3server
from finetune_localcluster.ports import free_port
from finetune_localcluster.s3server import S3Server
from finetune_trainer.resume import find_resume_point
from finetune_trainer.storage.retry import RetryPolicy
from finetune_trainer.storage.s3 import S3Store
from finetune_trainer.storage.targets import S3Target, UploadFailed

from .test_s3_output import publish_checkpoint

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
