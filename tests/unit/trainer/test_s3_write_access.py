"""Credentials that may list and read the output bucket but not write to it, against a real
versitygw with its internal IAM: a user the bucket policy grants s3:GetObject and
s3:ListBucket only. The output target must refuse them at startup (exit 78 naming
output.s3), and a refused upload must be a config error, not retried."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import S3Location
from finetune_localcluster.s3server import REGION, S3Server
from finetune_trainer.errors import InvalidConfig
from finetune_trainer.storage.s3 import S3Store, is_fatal
from finetune_trainer.storage.targets import S3Target

from .test_checkpoints import write_fake_checkpoint
from .test_s3_output import FAST


@dataclass
class IamServer:
    server: S3Server
    reader: tuple[str, str]
    bucket: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def root(self) -> tuple[str, str]:
        return self.server.access_key, self.server.secret_key

    def client(self, access: tuple[str, str]) -> Any:
        return self.server.client(aws_access_key_id=access[0], aws_secret_access_key=access[1])


@pytest.fixture(scope="module")
def iam_server(
    localcluster_binaries: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IamServer]:
    """versitygw with its internal IAM, a bucket owned by root, and a user that the bucket
    policy lets read and list it, nothing more."""
    base = tmp_path_factory.mktemp("s3-iam")
    with S3Server(base, binaries=localcluster_binaries, iam=True) as server:
        bucket = server.create_bucket(f"ro-{uuid.uuid4().hex[:8]}")
        iam = IamServer(server, server.create_user(), bucket)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": [iam.reader[0]]},
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        yield iam


@pytest.fixture
def reader_env(iam_server: IamServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", iam_server.reader[0])
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", iam_server.reader[1])


def reader_store(server: IamServer) -> S3Store:
    loc = S3Location(uri=f"s3://{server.bucket}/runs/a", endpoint=server.endpoint, region=REGION)
    return S3Store.for_location(loc, "output", retry=FAST)


def test_the_reader_can_list_and_read_but_not_write(iam_server: IamServer) -> None:
    """The setup the other tests rely on."""
    admin, reader = iam_server.client(iam_server.root), iam_server.client(iam_server.reader)
    admin.put_object(Bucket=iam_server.bucket, Key="runs/a/seen", Body=b"x")
    assert reader.get_object(Bucket=iam_server.bucket, Key="runs/a/seen")["Body"].read() == b"x"
    assert reader.list_objects_v2(Bucket=iam_server.bucket, Prefix="runs/")["KeyCount"] == 1
    with pytest.raises(Exception, match="AccessDenied"):
        reader.put_object(Bucket=iam_server.bucket, Key="runs/a/nope", Body=b"x")
    admin.delete_object(Bucket=iam_server.bucket, Key="runs/a/seen")


def test_read_only_credentials_are_refused_at_startup(
    iam_server: IamServer,
    reader_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = S3Target(reader_store(iam_server), "runs/a", tmp_path / "staging")
    with pytest.raises(InvalidConfig) as refused:
        target.prepare()
    text = str(refused.value)
    assert text.startswith(f"output.s3: the test write of s3://{iam_server.bucket}/runs/a/")
    assert "(AccessDenied)" in text
    assert "output.s3.credentialsSecretRef" in text and "bucket policy" in text
    assert iam_server.reader[1] not in text
    assert "attempt" not in caplog.text  # refused, not retried
    target.close()
    listed = iam_server.client(iam_server.root).list_objects_v2(Bucket=iam_server.bucket)
    assert listed["KeyCount"] == 0


def test_a_refused_upload_is_a_config_error_not_a_retry(
    iam_server: IamServer,
    reader_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """upload_file is a managed transfer: boto3 raises S3UploadFailedError, without a
    response, with the AccessDenied ClientError as its context."""
    from boto3.exceptions import S3UploadFailedError

    store = reader_store(iam_server)
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 100)
    with pytest.raises(InvalidConfig) as refused:
        store.upload_file(source, "runs/a/checkpoint-1/weights.bin")
    assert isinstance(refused.value.__cause__, S3UploadFailedError)
    assert is_fatal(refused.value.__cause__)
    assert str(refused.value).startswith(
        f"output.s3: the upload of s3://{iam_server.bucket}/runs/a/checkpoint-1/weights.bin "
        "was refused (AccessDenied)"
    )
    assert "attempt" not in caplog.text


def test_a_refused_background_upload_surfaces_as_a_config_error(
    iam_server: IamServer,
    reader_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Write access withdrawn after startup: the checkpoint upload fails at once with
    the config error (exit 78), and the staging copy stays."""
    caplog.set_level(logging.INFO, logger="finetune_trainer")
    target = S3Target(reader_store(iam_server), "runs/a", tmp_path / "staging")
    target.artifacts.prepare()  # what prepare() does before its write probe
    written = write_fake_checkpoint(target.artifacts, 3)
    manifest = target.artifacts.commit(
        written, "checkpoint-3", kind="checkpoint", step=3, fingerprint="fp", started_at="t"
    )
    reported: list[int] = []
    target.published("checkpoint-3", manifest, lambda: reported.append(3))
    with pytest.raises(InvalidConfig, match=r"output\.s3: the upload of .* \(AccessDenied\)"):
        target.flush()
    assert reported == []
    assert [c.step for c in target.artifacts.complete_checkpoints()] == [3]
    assert "attempt" not in caplog.text
    target.close()
