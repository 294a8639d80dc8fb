"""A small S3 client for artifacts: upload and download directories, read and write small
JSON objects, list and delete prefixes. Works with AWS S3 and S3-compatible stores
(path-style addressing when an endpoint is given). boto3 is imported only here, lazily.

Credentials come from the per-location environment variables of the contract
(``FTO_S3_<ROLE>_ACCESS_KEY_ID`` ...) and otherwise from the SDK's default chain (IRSA,
workload identity, instance profile, ``AWS_*`` variables). They are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..config import S3Location
from ..contract import Env, TrainerReason
from ..errors import InvalidConfig, exception_chain
from .retry import DEFAULT_RETRY, RetryPolicy, with_retries

T = TypeVar("T")

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

S3Role = Literal["model", "dataset", "output"]


def join_key(*parts: str) -> str:
    """Join key segments with single slashes, dropping empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


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
            f"credentialsSecretRef of the {role} S3 location)",
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


def _error_code(exc: BaseException) -> str:
    """The S3 error code of ``exc``, or of the first error in its chain that has one:
    boto3's managed transfers (``upload_file``) raise ``S3UploadFailedError``, which has no
    response of its own and carries the ClientError as its ``__context__``."""
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in _NOT_FOUND_CODES


# Answers that retrying cannot change.
_FATAL_CODES = _NOT_FOUND_CODES | {
    "NoSuchBucket",
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


def is_fatal(exc: BaseException) -> bool:
    return _error_code(exc) in _FATAL_CODES


# Refusals that only a change of the bucket name or of the credentials can fix.
_REFUSED_CODES = _FATAL_CODES - _NOT_FOUND_CODES


class KeyOutsideDirectory(ValueError):
    """A listed key that would be written outside the directory it is downloaded into
    (a '..' segment): whoever wrote it, the bucket's content has to change."""


class S3Store:
    """Artifact operations on one bucket, every network call retried with backoff."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        role: S3Role | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.retry = retry
        self.role = role

    @classmethod
    def for_location(
        cls, location: S3Location, role: S3Role, *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> S3Store:
        return cls(make_client(location, role), location.bucket, retry=retry, role=role)

    def _call(self, action: Callable[[], T], what: str) -> T:
        """``action`` with retries; a refused bucket or credentials is a config error (the
        run exits 78, and retrying the pod would meet the same answer)."""
        try:
            return with_retries(action, what=what, policy=self.retry, fatal=is_fatal)
        except Exception as exc:
            code = _error_code(exc)
            if code not in _REFUSED_CODES or self.role is None:
                raise
            raise InvalidConfig(
                f"{self.role}.s3: the {what} was refused ({code}); check the bucket name "
                f"and the credentials: the FineTuneJob's {self.role}.s3.credentialsSecretRef "
                f"({Env.s3(self.role, '*')} in the pod), or the pod's cloud identity, "
                "and what the bucket policy grants them"
            ) from exc

    def check_writable(self, prefix: str) -> None:
        """Write and delete a small probe object under ``prefix``, so credentials that may
        list and read but not write (or not delete, which re-uploads and rotation need)
        are refused at startup, before any GPU time, rather than at the first upload."""
        key = join_key(prefix, f".write-probe-{uuid.uuid4().hex[:12]}")
        what = "(made at startup to check {} access)"
        self.put_bytes(
            key,
            b"write probe\n",
            "text/plain",
            what=f"test write of {self.uri(key)} {what.format('write')}",
        )
        self.delete_key(key, what=f"test delete of {self.uri(key)} {what.format('delete')}")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # --- single objects ------------------------------------------------------------------
    def upload_file(self, path: Path, key: str) -> None:
        self._call(
            lambda: self.client.upload_file(str(path), self.bucket, key),
            f"upload of {self.uri(key)}",
        )

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        what: str | None = None,
    ) -> None:
        """Write one object; ``what`` names the action in errors (default: a write)."""
        self._call(
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            ),
            what or f"write of {self.uri(key)}",
        )

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, sort_keys=True).encode())

    def delete_key(self, key: str, what: str | None = None) -> None:
        """Delete one object (no error when there is none); ``what`` as for put_bytes."""
        self._call(
            lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
            what or f"delete of {self.uri(key)}",
        )

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""

        def get() -> bytes | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
            return bytes(response["Body"].read())

        return self._call(get, f"read of {self.uri(key)}")

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            lambda: self.client.download_file(self.bucket, key, str(path)),
            f"download of {self.uri(key)}",
        )

    # --- prefixes ------------------------------------------------------------------------
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a '/' is appended when missing)."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""

        def page_all() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            keys: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
            return keys

        yield from self._call(page_all, f"listing of {self.uri(prefix)}")

    def list_children(self, prefix: str) -> list[str]:
        """Names of the 'directories' directly under ``prefix``."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""

        def page_all() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            names: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(prefix) :].rstrip("/"))
            return names

        return self._call(page_all, f"listing of {self.uri(prefix)}")

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many there were."""
        keys = list(self.list_keys(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self._call(
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
                f"delete under {self.uri(prefix)}",
            )
        return len(keys)

    def upload_dir(self, root: Path, prefix: str, *, last: str | None = None) -> int:
        """Upload every file under ``root`` to ``prefix``; the file named ``last`` (e.g. the
        manifest) goes up only after all the others succeeded. Returns the byte count."""
        files = sorted(p for p in root.rglob("*") if p.is_file())
        ordered = [p for p in files if p.relative_to(root).as_posix() != last]
        ordered += [p for p in files if p.relative_to(root).as_posix() == last]
        total = 0
        for path in ordered:
            self.upload_file(path, join_key(prefix, path.relative_to(root).as_posix()))
            total += path.stat().st_size
        return total

    def download_prefix(self, prefix: str, root: Path) -> int:
        """Download everything under ``prefix`` into ``root`` (created); returns file count.
        Keys that would escape ``root`` are refused."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        count = 0
        base = root.resolve()
        for key in self.list_keys(prefix):
            rel = key[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            target = (root / rel).resolve()
            if base not in target.parents:
                raise KeyOutsideDirectory(f"refusing S3 key outside the download directory: {key}")
            self.download_file(key, target)
            count += 1
        return count


def download_prefix_or_object(store: S3Store, key: str, dest: Path, *, reuse: bool) -> Path:
    """Download ``key`` into ``dest`` through a temporary directory, so a half-finished
    download is never mistaken for a whole one. ``key`` is a prefix (returns ``dest``) or a
    single object (returns ``dest/<its name>``). With ``reuse``, an earlier complete copy
    of a prefix (same pod, restarted container) is used as it is."""
    if reuse and dest.is_dir() and any(dest.iterdir()):
        log.info("using the copy already in %s", dest)
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    try:
        result = dest
        if store.download_prefix(key, tmp) == 0:
            name = Path(key).name
            try:
                store.download_file(key, tmp / name)
            except Exception as exc:
                if is_not_found(exc) or not name:
                    raise FileNotFoundError(f"nothing at {store.uri(key)}") from None
                raise
            result = dest / name
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result
