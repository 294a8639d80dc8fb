"""S3 output against the real S3-compatible server (versitygw): uploads with the manifest
last, the latest pointer, rotation, retries, credentials, and resume from S3 into a fresh
staging directory."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import S3Location
from finetune_trainer.errors import InvalidConfig
from finetune_trainer.resume import find_resume_point
from finetune_trainer.run_progress import RunProgress
from finetune_trainer.storage.manifest import MANIFEST_NAME, parse_manifest
from finetune_trainer.storage.retry import RetryPolicy
from finetune_trainer.storage.s3 import S3Store
from finetune_trainer.storage.s3_client import credentials_from_env
from finetune_trainer.storage.targets import LATEST_POINTER, S3Target, UploadFailed

from .test_checkpoints import write_fake_checkpoint

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


class RecordingStore(S3Store):
    """The real store, recording the order of uploads and failing the first few of them
    on demand (a flaky network), to observe ordering and retries."""

    def __init__(self, *args: Any, fail_first: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uploaded: list[str] = []
        self.failures_left = fail_first
        real_upload = self.client.upload_file

        def upload(path: str, bucket: str, key: str) -> None:
            if self.failures_left > 0:
                self.failures_left -= 1
                raise ConnectionError("connection reset by peer (injected)")
            real_upload(path, bucket, key)
            self.uploaded.append(key)

        self.client.upload_file = upload
        real_put = self.client.put_object

        def put(**kwargs: Any) -> Any:
            response = real_put(**kwargs)
            # The manifest is written as a new object of its own (upload_file also calls
            # put_object, for the files recorded above).
            if kwargs["Key"].endswith(f"/{MANIFEST_NAME}"):
                self.uploaded.append(kwargs["Key"])
            return response

        self.client.put_object = put


@pytest.fixture
def bucket(s3_server: Any) -> str:
    return str(s3_server.create_bucket(f"out-{uuid.uuid4().hex[:10]}"))


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", s3_server.secret_key)


def location(s3_server: Any, bucket: str, prefix: str = "runs/a") -> S3Location:
    return S3Location(
        uri=f"s3://{bucket}/{prefix}", endpoint=s3_server.endpoint, region=s3_server.region
    )


def make_target(
    s3_server: Any, bucket: str, staging: Path, *, limit: int | None = None, fail_first: int = 0
) -> S3Target:
    loc = location(s3_server, bucket)
    base = S3Store.for_location(loc, "output", retry=FAST)
    store = RecordingStore(
        base.client, base.bucket, retry=FAST, role="output", fail_first=fail_first
    )
    target = S3Target(store, loc.prefix, staging, limit)
    target.prepare()
    return target


def earlier_attempt(s3_server: Any, bucket: str, tmp_path: Path, *steps: int) -> None:
    """What an earlier attempt left on S3: ``steps`` uploaded from its own staging dir."""
    first = make_target(s3_server, bucket, tmp_path / "staging-1")
    for step in steps:
        publish_checkpoint(first, step)
    first.close()


def publish_checkpoint(target: S3Target, step: int, fingerprint: str = "fp") -> None:
    written = write_fake_checkpoint(target.artifacts, step)
    name = f"checkpoint-{step}"
    manifest = target.artifacts.commit(
        written,
        name,
        kind="checkpoint",
        step=step,
        fingerprint=fingerprint,
        started_at="2026-01-01T00:00:00Z",
    )
    target.published(name, manifest)


def publish_final_model(target: S3Target, step: int) -> None:
    written = write_fake_checkpoint(target.artifacts, step)
    manifest = target.artifacts.commit(
        written,
        "final_model",
        kind="final_model",
        step=step,
        fingerprint="fp",
        started_at="2026-01-01T00:00:00Z",
    )
    target.published("final_model", manifest)


def keys(s3_server: Any, bucket: str) -> set[str]:
    client = s3_server.client()
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def get_json(s3_server: Any, bucket: str, key: str) -> Any:
    return json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_checkpoints_upload_with_manifest_last_then_latest_moves(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging")
    publish_checkpoint(target, 10)
    publish_checkpoint(target, 20)
    target.flush()

    store = target.store
    assert isinstance(store, RecordingStore)
    for step in (10, 20):
        uploads = [k for k in store.uploaded if k.startswith(f"runs/a/checkpoint-{step}/")]
        assert uploads[-1] == f"runs/a/checkpoint-{step}/{MANIFEST_NAME}"
        assert len(uploads) == 4
    present = keys(s3_server, bucket)
    assert "runs/a/checkpoint-20/sub/rng_state.pth" in present
    manifest = parse_manifest(
        s3_server.client()
        .get_object(Bucket=bucket, Key="runs/a/checkpoint-20/manifest.json")["Body"]
        .read()
    )
    assert manifest.step == 20 and manifest.fingerprint == "fp"
    pointer = get_json(s3_server, bucket, f"runs/a/{LATEST_POINTER}")
    assert pointer["step"] == 20
    assert pointer["uri"] == f"s3://{bucket}/runs/a/checkpoint-20"
    # The staging copy of 10 is gone (uploaded, superseded); the newest stays for a fast
    # resume in the same pod.
    assert [c.step for c in target.artifacts.checkpoints()] == [20]
    target.close()


def test_uploads_are_retried_with_backoff(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging", fail_first=2)
    publish_checkpoint(target, 5)
    target.flush()
    assert "runs/a/checkpoint-5/manifest.json" in keys(s3_server, bucket)
    assert "attempt 1 of 4" in caplog.text and "attempt 2 of 4" in caplog.text
    target.close()


def test_failed_upload_keeps_the_staging_copy_and_is_reported(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging", fail_first=100)
    publish_checkpoint(target, 5)
    with pytest.raises(UploadFailed, match=f"the upload of checkpoint-5 to s3://{bucket}/"):
        target.flush()
    assert target.unpublished_output
    assert [c.step for c in target.artifacts.complete_checkpoints()] == [5]
    assert not any(k.endswith("manifest.json") for k in keys(s3_server, bucket))
    # The next container in the same pod uploads it before anything else.
    again = make_target(s3_server, bucket, tmp_path / "staging")
    assert "runs/a/checkpoint-5/manifest.json" in keys(s3_server, bucket)
    again.close()
    target.close()


def test_rotation_on_s3_keeps_the_newest(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging", limit=2)
    for step in (10, 20, 30):
        publish_checkpoint(target, step)
    target.flush()
    prefixes = {k.split("/")[2] for k in keys(s3_server, bucket) if "checkpoint-" in k}
    assert prefixes == {"checkpoint-20", "checkpoint-30"}
    target.close()


def test_rotation_on_s3_does_not_count_checkpoints_left_above_the_run(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    # checkpoint-30 is complete but was not resumed from (corrupt, say); the new attempt
    # trains from 0 and its limit of 2 applies to its own checkpoints.
    earlier_attempt(s3_server, bucket, tmp_path, 30)
    target = make_target(s3_server, bucket, tmp_path / "staging-2", limit=2)
    for step in (10, 20):
        publish_checkpoint(target, step)
    target.flush()
    prefixes = {k.split("/")[2] for k in keys(s3_server, bucket) if "checkpoint-" in k}
    assert {"checkpoint-10", "checkpoint-20"} <= prefixes
    target.close()


def test_resume_from_s3_into_a_fresh_staging_dir_with_fallback(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 10, 20, 30)
    client = s3_server.client()
    # Corrupt checkpoint-30 on S3 (same size, one byte flipped), and leave a checkpoint-40
    # whose upload never finished (no manifest).
    key = "runs/a/checkpoint-30/adapter_model.safetensors"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[3] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    client.put_object(Bucket=bucket, Key="runs/a/checkpoint-40/trainer_state.json", Body=b"{}")

    fresh = make_target(s3_server, bucket, tmp_path / "staging-2")
    point = find_resume_point(fresh, "fp")

    assert point is not None and point.step == 20
    assert point.path == tmp_path / "staging-2" / "checkpoint-20"
    assert point.uri == f"s3://{bucket}/runs/a/checkpoint-20"
    assert (point.path / "sub" / "rng_state.pth").is_file()
    assert "checkpoint-40 is not usable: no manifest.json on S3" in caplog.text
    assert "checkpoint-30 is not usable: adapter_model.safetensors does not match" in caplog.text
    fresh.close()


def test_credentials_come_from_the_location_variables(
    s3_server: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="finetune_trainer")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.delenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(InvalidConfig, match="FTO_S3_OUTPUT_SECRET_ACCESS_KEY is not set"):
        credentials_from_env("output")

    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", "wrong-" + s3_server.secret_key)
    store = S3Store.for_location(location(s3_server, bucket), "output", retry=FAST)
    # Denied access is a config error (exit 78) naming the location and what to check,
    # and it is not retried.
    with pytest.raises(InvalidConfig) as denied:
        store.put_json("runs/a/x", {})
    assert re.search(r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId", str(denied.value))
    assert str(denied.value).startswith("output.s3: the write of s3://")
    assert "credentialsSecretRef" in str(denied.value)
    assert "attempt" not in caplog.text

    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", s3_server.secret_key)
    store = S3Store.for_location(location(s3_server, bucket), "output", retry=FAST)
    store.put_json("runs/a/x", {"ok": True})
    assert json.loads(store.get_bytes("runs/a/x") or b"") == {"ok": True}
    assert store.get_bytes("runs/a/missing") is None
    assert s3_server.secret_key not in caplog.text
    # A bucket that does not exist: the same kind of error, naming the bucket.
    missing = S3Store.for_location(location(s3_server, "no-such-bucket"), "output", retry=FAST)
    with pytest.raises(InvalidConfig, match=r"output\.s3: .*s3://no-such-bucket/.*NoSuchBucket"):
        missing.put_json("runs/a/x", {})


def test_training_to_s3_and_resuming_from_s3_in_a_fresh_pod(
    s3_server: Any, bucket: str, tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    from finetune_api.contract import TerminationMessage

    from .cli_helpers import cli_env, json_records
    from .train_helpers import finish, start_cli, tiny_config

    output = {
        "s3": {
            "uri": f"s3://{bucket}/runs/tiny",
            "endpoint": s3_server.endpoint,
            "region": s3_server.region,
        }
    }
    config = tiny_config(tiny_model_dir, tiny_dataset_path, output, maxSteps=4, saveSteps=2)
    credentials = {
        "FTO_S3_OUTPUT_ACCESS_KEY_ID": s3_server.access_key,
        "FTO_S3_OUTPUT_SECRET_ACCESS_KEY": s3_server.secret_key,
    }

    def run(scratch: str) -> tuple[int, str, str, TerminationMessage]:
        env = cli_env(tmp_path, FTO_SCRATCH_DIR=str(tmp_path / scratch), **credentials)
        code, stdout, stderr = finish(start_cli(config, tmp_path, env))
        text = (tmp_path / "termination-log").read_text()
        message = TerminationMessage.decode(text)
        assert message is not None
        return code, stdout, stderr, message

    code, _, stderr, message = run("pod-1")
    assert code == 0, stderr[-4000:]
    present = keys(s3_server, bucket)
    for name in ("checkpoint-2", "checkpoint-4", "final_model"):
        assert f"runs/tiny/{name}/manifest.json" in present
        assert f"runs/tiny/{name}/adapter_model.safetensors" in present
    assert get_json(s3_server, bucket, "runs/tiny/latest")["step"] == 4
    assert message.adapter_uri == f"s3://{bucket}/runs/tiny/final_model"
    assert message.checkpoint is not None
    assert message.checkpoint.uri == f"s3://{bucket}/runs/tiny/checkpoint-4"
    assert s3_server.secret_key not in stderr

    # Lose the newest checkpoint's manifest and the final adapter: a new pod (fresh
    # staging) must fall back to checkpoint-2 even though `latest` still says 4.
    client = s3_server.client()
    client.delete_object(Bucket=bucket, Key="runs/tiny/checkpoint-4/manifest.json")
    for key in [k for k in present if k.startswith("runs/tiny/final_model/")]:
        client.delete_object(Bucket=bucket, Key=key)

    code, stdout, stderr, message = run("pod-2")
    assert code == 0, stderr[-4000:]
    assert "checkpoint-4 is not usable: no manifest.json on S3" in stderr
    assert "resuming from checkpoint-2 (step 2)" in stderr
    assert message.resumed_from_step == 2
    assert [r["step"] for r in json_records(stdout)] == [3, 4]
    present = keys(s3_server, bucket)
    assert "runs/tiny/checkpoint-4/manifest.json" in present
    assert "runs/tiny/final_model/manifest.json" in present
    assert get_json(s3_server, bucket, "runs/tiny/latest")["step"] == 4


# --- refusals through boto3's managed transfers ---------------------------------------------
def test_a_refused_upload_is_recognised_through_boto3s_wrapper() -> None:
    """boto3's upload_file raises S3UploadFailedError (no response of its own) from inside
    its ``except ClientError``; the refusal must still be a config error, not retried.
    (test_s3_write_access.py shows the same against a server that really refuses.)"""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    calls = []

    def upload_file(path: str, bucket: str, key: str) -> None:
        calls.append(key)
        try:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject"
            )
        except ClientError as exc:  # as boto3.s3.transfer.S3Transfer.upload_file does
            message = f"Failed to upload {path} to {bucket}/{key}: {exc}"
            raise S3UploadFailedError(message)  # noqa: B904 (implicit chaining, as boto3's)

    client = type("Client", (), {"upload_file": staticmethod(upload_file)})()
    store = S3Store(client, "b", retry=FAST, role="output")
    with pytest.raises(InvalidConfig, match=r"^output\.s3: the upload of s3://b/k was refused"):
        store.upload_file(Path("/dev/null"), "k")
    assert calls == ["k"]


def test_prepare_probes_write_access_and_leaves_nothing_behind(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    loc = location(s3_server, bucket)
    store = S3Store.for_location(loc, "output", retry=FAST)
    calls: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params["Key"]))

    store.client.meta.events.register("provide-client-params.s3.PutObject", record)
    store.client.meta.events.register("provide-client-params.s3.DeleteObject", record)
    target = S3Target(store, loc.prefix, tmp_path / "staging")
    target.prepare()
    # The probe object is written, rewritten twice to measure the conditional writes the
    # store honours, and deleted.
    assert [op for op, _ in calls] == ["PutObject"] * 3 + ["DeleteObject"]
    assert len({key for _, key in calls}) == 1
    assert calls[0][1].startswith(f"{loc.prefix}/.write-probe-")
    assert keys(s3_server, bucket) == set()
    target.close()


# --- when a checkpoint is reported ----------------------------------------------------------
class GatedStore(RecordingStore):
    """Uploads wait for ``gate``; every write is recorded in ``events`` in order."""

    def __init__(self, *args: Any, events: list[tuple[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.events = events

    def upload_file(self, path: Path, key: str) -> None:
        assert self.gate.wait(30)
        super().upload_file(path, key)

    def put_replacing(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        super().put_replacing(key, data, *args, **kwargs)
        self.events.append(("put", key))


class RecordingProgress(RunProgress):
    events: list[tuple[str, Any]]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "checkpoint" and value is not None and hasattr(self, "events"):
            self.events.append(("report", value.step))
        super().__setattr__(name, value)


def test_an_s3_checkpoint_is_reported_only_once_uploaded_and_pointed_at(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from .test_run_tracker import make_tracker, reported_step, save

    caplog.set_level(logging.INFO, logger="finetune_trainer")
    events: list[tuple[str, Any]] = []
    loc = location(s3_server, bucket)
    base = S3Store.for_location(loc, "output", retry=FAST)
    store = GatedStore(base.client, base.bucket, retry=FAST, events=events)
    target = S3Target(store, loc.prefix, tmp_path / "staging")
    target.prepare()
    progress = RecordingProgress()
    progress.events = events
    tracker = make_tracker(target, progress=progress)

    save(tracker, 2)
    # Committed in staging, the upload queued: nothing may claim it exists yet.
    assert progress.checkpoint is None
    assert math.isnan(reported_step(tracker) or math.nan)
    assert "checkpoint-2 complete" not in caplog.text

    store.gate.set()
    target.flush()
    assert progress.checkpoint is not None
    assert progress.checkpoint.step == 2
    assert progress.checkpoint.uri == f"s3://{bucket}/runs/a/checkpoint-2"
    assert reported_step(tracker) == 2
    assert f"checkpoint-2 complete: 4 files, 0.0 MB, manifest written -> s3://{bucket}" in (
        caplog.text
    )
    # Reported after the manifest and the latest pointer were written.
    assert events.index(("put", "runs/a/latest")) < events.index(("report", 2))
    target.close()


def test_a_checkpoint_whose_upload_failed_is_never_reported(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    from .test_run_tracker import make_tracker, reported_step, save

    target = make_target(s3_server, bucket, tmp_path / "staging", fail_first=100)
    tracker = make_tracker(target)
    save(tracker, 2)
    with pytest.raises(UploadFailed):
        target.flush()
    assert tracker.progress.checkpoint is None
    assert math.isnan(reported_step(tracker) or math.nan)
    target.close()


# --- an upload that fails after its retries -------------------------------------------------
def test_a_failed_upload_does_not_cost_the_newer_checkpoint(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A short outage: checkpoint-10's upload spends all its retries; S3 is back by step 20.
    Saving checkpoint-20 must not fail on checkpoint-10's error, nor lose checkpoint-20."""
    from .test_run_tracker import make_tracker, reported_step, save

    target = make_target(s3_server, bucket, tmp_path / "staging", fail_first=FAST.attempts)
    tracker = make_tracker(target)
    save(tracker, 10, max_steps=30)
    save(tracker, 20, max_steps=30)
    target.flush()

    assert tracker.progress.checkpoint is not None and tracker.progress.checkpoint.step == 20
    assert reported_step(tracker) == 20
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 20
    assert not any(k.startswith("runs/a/checkpoint-10/") for k in keys(s3_server, bucket))
    assert f"s3://{bucket}/runs/a/checkpoint-10 never reached S3" in caplog.text
    assert "checkpoint-20, uploaded since, takes its place" in caplog.text
    assert not target.unpublished_output
    assert [c.step for c in target.artifacts.checkpoints()] == [20]
    target.close()


def test_a_long_outage_keeps_only_the_newest_staged_checkpoint(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every upload fails for four saves: staging keeps the newest checkpoint and one
    fallback, not one per save (a scratch volume would fill through a long outage)."""
    target = make_target(s3_server, bucket, tmp_path / "staging", fail_first=100)
    for step in (10, 20, 30, 40):
        publish_checkpoint(target, step)
    with pytest.raises(UploadFailed, match="the upload of checkpoint-40 to"):
        target.flush()
    assert sorted(c.step for c in target.artifacts.checkpoints()) == [30, 40]
    assert "checkpoint-10 never reached S3" in caplog.text
    assert "its staged copy is removed: checkpoint-30 supersedes it" in caplog.text
    assert "checkpoint-20 never reached S3" in caplog.text
    assert target.unpublished_output
    target.close()


def test_a_final_adapter_that_could_not_be_uploaded_fails_the_run(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging")
    publish_checkpoint(target, 20)
    target.flush()
    store = target.store
    assert isinstance(store, RecordingStore)
    store.failures_left = 100  # S3 goes away for good
    publish_final_model(target, 20)
    with pytest.raises(UploadFailed) as failed:
        target.flush()
    # What went wrong, in the trainer's words: how the connection failed stays in the log.
    assert str(failed.value) == (
        f"the upload of final_model to s3://{bucket}/runs/a/final_model failed after its "
        f"retries: output.s3.endpoint: could not get an answer from {s3_server.endpoint} "
        "(unreachable, refused or not an S3 endpoint) to the upload of "
        f"s3://{bucket}/runs/a/final_model/adapter_model.safetensors; check the endpoint "
        "and that the pod may reach it"
    )
    assert (target.artifacts.root / "final_model" / MANIFEST_NAME).is_file()
    target.close()  # the failure was reported once; the target still remembers it
    assert target.unpublished_output


# --- resume: errors while fetching fall back ------------------------------------------------
def test_resume_falls_back_when_an_object_vanishes_during_the_download(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 10, 20)

    fresh = make_target(s3_server, bucket, tmp_path / "staging-2")
    real_download = fresh.store.download_file

    def download(key: str, path: Path) -> None:
        # Listed a moment ago, removed (say rotated out by another writer) before the read.
        if key == "runs/a/checkpoint-20/trainer_state.json":
            s3_server.client().delete_object(Bucket=bucket, Key=key)
        real_download(key, path)

    fresh.store.download_file = download  # type: ignore[method-assign]
    point = find_resume_point(fresh, "fp")
    assert point is not None and point.step == 10
    assert "checkpoint-20 is not usable: an object disappeared during the download" in caplog.text
    fresh.close()


def test_resume_falls_back_on_a_key_that_would_escape_the_checkpoint(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 10, 20)

    fresh = make_target(s3_server, bucket, tmp_path / "staging-2")
    real_list = fresh.store.list_keys

    def list_keys(prefix: str) -> Iterator[str]:
        yield from real_list(prefix)
        if "checkpoint-20" in prefix:  # what a hostile or broken writer could leave there
            yield "runs/a/checkpoint-20/../../../outside"

    fresh.store.list_keys = list_keys  # type: ignore[method-assign]
    point = find_resume_point(fresh, "fp")
    assert point is not None and point.step == 10
    assert "checkpoint-20 is not usable: refusing S3 key outside" in caplog.text
    assert not (tmp_path / "outside").exists()
    fresh.close()


# --- staged leftovers are verified before they are uploaded ---------------------------------
def test_a_staged_leftover_that_does_not_verify_is_not_uploaded(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging = tmp_path / "staging"
    dead = make_target(s3_server, bucket, staging, fail_first=100)
    publish_checkpoint(dead, 5)
    publish_checkpoint(dead, 10)
    with pytest.raises(UploadFailed):
        dead.flush()
    dead.close()
    # checkpoint-10's weights rotted on the disk while the pod was away.
    weights = staging / "checkpoint-10" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))

    again = make_target(s3_server, bucket, staging)
    present = keys(s3_server, bucket)
    assert "runs/a/checkpoint-5/manifest.json" in present
    assert not any(k.startswith("runs/a/checkpoint-10/") for k in present)
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 5
    assert (
        "not uploading checkpoint-10, staged by a previous attempt: it does not verify "
        "(adapter_model.safetensors does not match its sha256 checksum)"
    ) in caplog.text
    again.close()


# --- the latest pointer ---------------------------------------------------------------------
def test_latest_never_moves_back_to_a_lower_step(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 30)
    # A later run that resumed from further back (say checkpoint-30 did not verify).
    later = make_target(s3_server, bucket, tmp_path / "staging-2")
    publish_checkpoint(later, 20)
    later.flush()
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 30
    later.close()


def test_latest_moves_back_when_the_newer_checkpoint_it_names_is_gone(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 30)
    s3_server.client().delete_object(Bucket=bucket, Key="runs/a/checkpoint-30/manifest.json")
    later = make_target(s3_server, bucket, tmp_path / "staging-2")
    publish_checkpoint(later, 20)
    later.flush()
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 20
    later.close()


def test_latest_never_names_a_checkpoint_while_it_is_uploaded_again(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    """A run that fell back from checkpoint-30 reaches step 30 again: its prefix is deleted
    and rewritten, and meanwhile `latest` names the newest other complete checkpoint."""
    earlier_attempt(s3_server, bucket, tmp_path, 20, 30)

    seen: list[int | None] = []
    again = make_target(s3_server, bucket, tmp_path / "staging-2")
    real_upload = again.store.upload_file

    def look() -> None:
        pointer = again.latest_pointer()
        seen.append(pointer["step"] if pointer else None)  # type: ignore[arg-type]

    def upload(path: Path, key: str) -> None:
        look()
        real_upload(path, key)

    real_put_new = again.store.put_new

    def put_new(key: str, data: bytes, *args: Any) -> None:
        if key.endswith(MANIFEST_NAME):
            look()  # the manifest, written last: the pointer still waits
        real_put_new(key, data, *args)

    again.store.upload_file = upload  # type: ignore[method-assign]
    again.store.put_new = put_new  # type: ignore[method-assign]
    publish_checkpoint(again, 30)
    again.flush()
    assert seen == [20, 20, 20, 20]
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 30
    again.close()


def test_latest_is_removed_while_the_only_checkpoint_is_uploaded_again(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 30)

    seen: list[bool] = []
    again = make_target(s3_server, bucket, tmp_path / "staging-2")
    real_upload = again.store.upload_file

    def upload(path: Path, key: str) -> None:
        seen.append(again.latest_pointer() is None)
        real_upload(path, key)

    real_put_new = again.store.put_new

    def put_new(key: str, data: bytes, *args: Any) -> None:
        if key.endswith(MANIFEST_NAME):
            seen.append(again.latest_pointer() is None)  # the manifest, written last
        real_put_new(key, data, *args)

    again.store.upload_file = upload  # type: ignore[method-assign]
    again.store.put_new = put_new  # type: ignore[method-assign]
    publish_checkpoint(again, 30)
    again.flush()
    assert seen == [True] * 4
    assert get_json(s3_server, bucket, "runs/a/latest")["step"] == 30
    again.close()
