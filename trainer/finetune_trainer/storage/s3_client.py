"""The boto3 client for an S3 location: its endpoint, addressing style, timeouts and
credentials. boto3 is imported only here, lazily, when an S3 location is used.

Credentials come from the per-location environment variables of the contract
(``FTO_S3_<ROLE>_ACCESS_KEY_ID`` ...) and otherwise from the SDK's default chain (IRSA,
workload identity, instance profile, ``AWS_*`` variables). They are never logged.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from finetune_api.config import S3Location
from finetune_api.contract import Env, TrainerReason

from ..errors import InvalidConfig
from ..remote_errors import S3Role, s3_field

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def credentials_from_env(role: S3Role) -> dict[str, str]:
    """boto3 keyword arguments from the location's own variables, or {} for the default
    chain. Half a key pair is a configuration error, reported by variable name only."""
    key_id = os.environ.get(Env.s3(role, "ACCESS_KEY_ID"))
    secret = os.environ.get(Env.s3(role, "SECRET_ACCESS_KEY"))
    token = os.environ.get(Env.s3(role, "SESSION_TOKEN"))
    if bool(key_id) != bool(secret):
        missing = Env.s3(role, "SECRET_ACCESS_KEY" if key_id else "ACCESS_KEY_ID")
        raise InvalidConfig(
            f"{missing} is not set but its pair is; set both or neither (check the "
            f"credentialsSecretRef of {s3_field(role)}.s3)",
            reason=TrainerReason.INVALID_S3_CREDENTIALS,
        )
    if not key_id:
        return {}
    creds = {"aws_access_key_id": key_id, "aws_secret_access_key": secret or ""}
    if token:
        creds["aws_session_token"] = token
    return creds


def make_client(location: S3Location, role: S3Role) -> S3Client:
    """A boto3 S3 client for ``location``."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        # Custom endpoints (MinIO, Ceph, versitygw) rarely have wildcard DNS per bucket.
        s3={"addressing_style": "path" if location.endpoint else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=location.endpoint,
        region_name=location.region or ("us-east-1" if location.endpoint else None),
        config=config,
        **credentials_from_env(role),
    )
