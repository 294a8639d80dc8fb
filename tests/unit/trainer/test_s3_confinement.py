"""S3 output against the real S3-compatible server (versitygw 1.8.0): a checkpoint on S3
is confined like a local one (its manifest's names, and the objects under its prefix,
checked before anything is downloaded), and manifests and the ``latest`` pointer are
written conditionally, with a fallback where a store does not honour the headers."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.resume import find_resume_point
from finetune_trainer.storage.manifest import MANIFEST_NAME
from finetune_trainer.storage.s3 import ConditionalWrites, WriteConflict
from finetune_trainer.storage.targets import LATEST_POINTER, S3Target

from .test_s3_output import earlier_attempt, get_json, keys, make_target, publish_checkpoint

PREFIX = "runs/a"


@pytest.fixture
def bucket(s3_server: Any) -> str:
    return str(s3_server.create_bucket(f"out-{uuid.uuid4().hex[:10]}"))


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", s3_server.secret_key)


def put(s3_server: Any, bucket: str, key: str, body: bytes) -> None:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body)


def remote_manifest(s3_server: Any, bucket: str, step: int) -> dict[str, Any]:
    return get_json(s3_server, bucket, f"{PREFIX}/checkpoint-{step}/{MANIFEST_NAME}")  # type: ignore[no-any-return]


def record_puts(target: S3Target) -> list[dict[str, Any]]:
    """The parameters of every PutObject the target's client sends from now on."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    target.store.client.meta.events.register("provide-client-params.s3.PutObject", record)
    return calls


# --- what the server honours ------------------------------------------------------------------


def test_the_local_server_honours_both_conditional_puts(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured at startup with the write probe; the README records the result."""
    caplog.set_level(logging.INFO)
    target = make_target(s3_server, bucket, tmp_path / "staging")
    assert target.store.conditional == ConditionalWrites(if_none_match=True, if_match=True)
    assert "honours If-None-Match and If-Match on PUT" in caplog.text
    client = s3_server.client()
    # The same facts, asked of the server directly.
    client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(Exception, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    etag = client.head_object(Bucket=bucket, Key="k")["ETag"]
    with pytest.raises(Exception, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch='"' + "0" * 32 + '"')
    client.put_object(Bucket=bucket, Key="k", Body=b"4", IfMatch=etag)
    with pytest.raises(Exception, match="PreconditionFailed"):
        client.delete_object(Bucket=bucket, Key="k", IfMatch=etag)  # the ETag moved on
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"4"
    with pytest.raises(Exception, match="NoSuchKey"):
        client.put_object(Bucket=bucket, Key="gone", Body=b"5", IfMatch=etag)
    with pytest.raises(Exception, match="NotImplemented"):  # only * is implemented
        client.put_object(Bucket=bucket, Key="k", Body=b"6", IfNoneMatch=etag)
    client.delete_object(
        Bucket=bucket, Key="k", IfMatch=client.head_object(Bucket=bucket, Key="k")["ETag"]
    )
    assert "k" not in {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}

    def complete(body: bytes) -> Any:
        upload = client.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
        part = client.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=body)
        return client.complete_multipart_upload(
            Bucket=bucket,
            Key="m",
            UploadId=upload,
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            IfNoneMatch="*",
        )

    complete(b"first")
    with pytest.raises(Exception, match="PreconditionFailed"):
        complete(b"second")
    assert client.get_object(Bucket=bucket, Key="m")["Body"].read() == b"first"
    target.close()


# --- manifests ----------------------------------------------------------------------------------


def test_a_manifest_is_written_only_as_a_new_object(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging")
    calls = record_puts(target)
    publish_checkpoint(target, 10)
    target.flush()
    (manifest_put,) = [c for c in calls if c["Key"].endswith(MANIFEST_NAME)]
    assert manifest_put["IfNoneMatch"] == "*"
    target.close()


@pytest.mark.parametrize("conditional", [True, False], ids=["honoured", "fallback"])
def test_another_writer_s_manifest_is_never_overwritten(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, conditional: bool
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging")
    if not conditional:  # a store that does not honour the headers: read, then write
        target.store.conditional = ConditionalWrites(if_none_match=False, if_match=False)
    theirs = b'{"written": "by another trainer"}'
    real_upload = target.store.upload_file

    def upload(path: Path, key: str) -> None:
        real_upload(path, key)
        # Another writer, on the same prefix, finishes its manifest meanwhile.
        put(s3_server, bucket, f"{PREFIX}/checkpoint-10/{MANIFEST_NAME}", theirs)

    target.store.upload_file = upload  # type: ignore[method-assign]
    publish_checkpoint(target, 10)
    with pytest.raises(Exception, match="checkpoint-10") as caught:
        target.flush()
    assert isinstance(caught.value.__cause__, WriteConflict)
    client = s3_server.client()
    key = f"{PREFIX}/checkpoint-10/{MANIFEST_NAME}"
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == theirs
    assert f"{PREFIX}/{LATEST_POINTER}" not in keys(s3_server, bucket)
    target.close()


# --- the latest pointer -------------------------------------------------------------------------


def test_the_pointer_is_created_and_moved_conditionally(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path
) -> None:
    target = make_target(s3_server, bucket, tmp_path / "staging")
    calls = record_puts(target)
    publish_checkpoint(target, 10)
    target.flush()
    publish_checkpoint(target, 20)
    target.flush()
    pointer_puts = [c for c in calls if c["Key"] == f"{PREFIX}/{LATEST_POINTER}"]
    assert pointer_puts[0]["IfNoneMatch"] == "*" and "IfMatch" not in pointer_puts[0]
    assert pointer_puts[1]["IfMatch"].startswith('"') and "IfNoneMatch" not in pointer_puts[1]
    assert get_json(s3_server, bucket, f"{PREFIX}/{LATEST_POINTER}")["step"] == 20
    target.close()


def _pointer(step: int, bucket: str) -> bytes:
    name = f"checkpoint-{step}"
    return json.dumps(
        {"step": step, "checkpoint": name, "uri": f"s3://{bucket}/{PREFIX}/{name}"}
    ).encode()


@pytest.mark.parametrize("conditional", [True, False], ids=["honoured", "fallback"])
def test_a_pointer_moved_by_another_writer_is_decided_again(
    s3_server: Any,
    bucket: str,
    s3_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    conditional: bool,
) -> None:
    """This run moves `latest` from 10 to 30; between its read and its write another writer
    moves it to 40 (complete). The write is refused, the pointer read again, and since it
    now names a newer complete checkpoint it stays there, never dragged back to 30."""
    caplog.set_level(logging.INFO)
    earlier_attempt(s3_server, bucket, tmp_path, 10, 40)
    put(s3_server, bucket, f"{PREFIX}/{LATEST_POINTER}", _pointer(10, bucket))
    target = make_target(s3_server, bucket, tmp_path / "staging-2")
    if not conditional:
        target.store.conditional = ConditionalWrites(if_none_match=False, if_match=False)
    real_read: Callable[[], Any] = target.latest.read
    reads: list[Any] = []

    def read_latest() -> Any:
        found = real_read()
        reads.append(found[0]["step"] if found[0] else None)
        if len(reads) == 2:  # the read that decides the move after the upload of 30
            put(s3_server, bucket, f"{PREFIX}/{LATEST_POINTER}", _pointer(40, bucket))
        return found

    target.latest.read = read_latest  # type: ignore[method-assign]
    publish_checkpoint(target, 30)
    target.flush()
    assert reads == [10, 10, 40]  # before the upload; the stale decision; the new one
    assert get_json(s3_server, bucket, f"{PREFIX}/{LATEST_POINTER}")["step"] == 40
    assert "changed" in caplog.text and f"reading s3://{bucket}/{PREFIX}/latest again" in (
        caplog.text
    )
    assert f"s3://{bucket}/{PREFIX}/latest stays at checkpoint-40" in caplog.text
    target.close()


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def test_a_store_that_does_not_implement_the_header_falls_back(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store answering 501 to If-None-Match (as versitygw does to If-None-Match with an
    ETag): the write is made after a read instead, and the trainer says so once."""
    from botocore.awsrequest import AWSResponse

    target = make_target(s3_server, bucket, tmp_path / "staging")

    def not_implemented(request: Any, **_: Any) -> Any:
        if request.method == "PUT" and "If-None-Match" in request.headers:
            body = b"<Error><Code>NotImplemented</Code><Message>no</Message></Error>"
            return AWSResponse(request.url, 501, {}, _Raw(body))
        return None

    target.store.client.meta.events.register("before-send.s3.PutObject", not_implemented)
    publish_checkpoint(target, 10)
    target.flush()
    assert f"{PREFIX}/checkpoint-10/{MANIFEST_NAME}" in keys(s3_server, bucket)
    assert get_json(s3_server, bucket, f"{PREFIX}/{LATEST_POINTER}")["step"] == 10
    assert target.store.conditional == ConditionalWrites(if_none_match=False, if_match=True)
    assert "does not implement If-None-Match on PUT" in caplog.text
    assert "reading before writing instead" in caplog.text
    target.close()


# --- confinement of what is downloaded -----------------------------------------------------------


def _tamper_manifest(
    s3_server: Any, bucket: str, step: int, change: Callable[[dict[str, Any]], None]
) -> None:
    data = remote_manifest(s3_server, bucket, step)
    change(data)
    put(s3_server, bucket, f"{PREFIX}/checkpoint-{step}/{MANIFEST_NAME}", json.dumps(data).encode())


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        next(f for f in data["files"] if f["path"] == old)["path"] = new

    return change


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (
            lambda s, b: _tamper_manifest(s, b, 20, _rename("trainer_state.json", "../../x")),
            "entry '../../x' has a '..' segment",
        ),
        (
            lambda s, b: _tamper_manifest(s, b, 20, _rename("trainer_state.json", "/etc/passwd")),
            "entry '/etc/passwd' is an absolute path",
        ),
        (
            lambda s, b: put(s, b, f"{PREFIX}/checkpoint-20/extra.bin", b"x" * 10),
            f"{PREFIX}/checkpoint-20/extra.bin is on S3 but not in the manifest",
        ),
        (
            lambda s, b: put(s, b, f"{PREFIX}/checkpoint-20/trainer_state.json", b"{}" * 4096),
            "trainer_state.json has 8192 bytes on S3, the manifest says",
        ),
        (
            lambda s, b: _tamper_manifest(s, b, 20, lambda d: d.update(files=[])),
            "incomplete: its manifest lists no files",
        ),
    ],
    ids=["dotdot", "absolute", "extra object", "size", "empty"],
)
def test_a_tampered_s3_checkpoint_is_skipped_before_anything_is_downloaded(
    s3_server: Any,
    bucket: str,
    s3_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[Any, str], None],
    why: str,
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 10, 20)
    tamper(s3_server, bucket)
    fresh = make_target(s3_server, bucket, tmp_path / "staging-2")
    downloaded: list[str] = []
    real_download = fresh.store.download_file

    def download(key: str, path: Path) -> None:
        downloaded.append(key)
        real_download(key, path)

    fresh.store.download_file = download  # type: ignore[method-assign]
    point = find_resume_point(fresh, "fp")
    assert point is not None and point.step == 10
    assert "checkpoint-20 is not usable: " in caplog.text
    assert why in caplog.text, caplog.text
    assert not any("checkpoint-20" in key for key in downloaded)
    assert not (tmp_path / "x").exists()
    fresh.close()


def test_an_oversized_remote_manifest_is_not_read(
    s3_server: Any, bucket: str, s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier_attempt(s3_server, bucket, tmp_path, 10, 20)
    put(s3_server, bucket, f"{PREFIX}/checkpoint-20/{MANIFEST_NAME}", b" " * (17 * 1024 * 1024))
    fresh = make_target(s3_server, bucket, tmp_path / "staging-2")
    point = find_resume_point(fresh, "fp")
    assert point is not None and point.step == 10
    assert "manifest.json is larger than 16777216 bytes" in caplog.text
    fresh.close()
