"""The S3 server is a real S3 implementation reachable with boto3."""

from __future__ import annotations

import uuid

import pytest

from finetune_localcluster.s3server import S3Server

pytestmark = pytest.mark.e2e


def test_s3_round_trips_an_object(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:8]}")
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="checkpoints/step-10/manifest.json", Body=b'{"step": 10}')
    body = s3.get_object(Bucket=bucket, Key="checkpoints/step-10/manifest.json")["Body"].read()
    assert body == b'{"step": 10}'
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/")
    assert [o["Key"] for o in listing["Contents"]] == ["checkpoints/step-10/manifest.json"]
    assert s3_server.endpoint.startswith("http://127.0.0.1:")
    assert s3_server.region == "us-east-1"


def test_s3_rejects_wrong_credentials(s3_server: S3Server) -> None:
    import boto3
    from botocore.exceptions import ClientError

    bucket = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:8]}")
    intruder = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="wrong-" + s3_server.secret_key,
        region_name=s3_server.region,
    )
    with pytest.raises(ClientError) as error:
        intruder.get_object(Bucket=bucket, Key="anything")
    assert error.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_multipart_upload_of_a_large_object(s3_server: S3Server) -> None:
    from boto3.s3.transfer import TransferConfig

    bucket = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:8]}")
    s3 = s3_server.client()
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: two 5 MiB parts
    import io

    config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    s3.upload_fileobj(io.BytesIO(data), bucket, "adapter/model.safetensors", Config=config)
    head = s3.head_object(Bucket=bucket, Key="adapter/model.safetensors")
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # a multipart ETag
