"""A small S3 client for artifacts: upload and download directories, read and write small
JSON objects, list and delete prefixes. Works with AWS S3 and S3-compatible stores; the
boto3 client comes from s3_client.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from finetune_api.config import S3Location

from ..errors import InvalidConfig
from ..remote_errors import (
    REFUSED_CODES,
    RemoteFailure,
    S3Role,
    details,
    is_remote,
    s3_error_code,
    s3_problem,
)
from .paths import relative_name_problem
from .retry import DEFAULT_RETRY, RetryPolicy, with_retries
from .s3_client import make_client

T = TypeVar("T")

log = logging.getLogger(__name__)


def join_key(*parts: str) -> str:
    """Join key segments with single slashes, dropping empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _error_code(exc: BaseException) -> str:
    """The S3 error code of ``exc``, or of the first error in its chain that has one:
    boto3's managed transfers (``upload_file``) raise ``S3UploadFailedError``, which has no
    response of its own and carries the ClientError as its ``__context__``; and a failed
    request comes out of :meth:`S3Store._call` as the trainer's own error, the store's
    behind it."""
    return s3_error_code(exc)


_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in _NOT_FOUND_CODES


_PRECONDITION_CODES = frozenset({"412", "PreconditionFailed"})
# What a store answers to a request (a conditional header) it does not implement.
_UNSUPPORTED_CODES = frozenset({"501", "NotImplemented", "InvalidArgument", "InvalidRequest"})

# Answers that retrying cannot change.
_FATAL_CODES = _NOT_FOUND_CODES | _PRECONDITION_CODES | _UNSUPPORTED_CODES | {"403"} | REFUSED_CODES
# Answers the callers act on (a missing object, a conditional write refused, a header not
# implemented): logged as details only.
_EXPECTED_CODES = _NOT_FOUND_CODES | _PRECONDITION_CODES | _UNSUPPORTED_CODES


def is_fatal(exc: BaseException) -> bool:
    return _error_code(exc) in _FATAL_CODES


class UnsafeKey(ValueError):
    """A listed key that cannot be downloaded as the file it names: whoever wrote it, the
    bucket's content has to change. ``hint`` says how."""

    hint = ""


class KeyOutsideDirectory(UnsafeKey):
    """A key that would be written outside the directory it is downloaded into (a '..'
    segment, an absolute name)."""

    hint = " (a '..' segment in its key climbs out of the prefix)"


class _HeaderUnsupported(Exception):
    """The store answered a conditional header with 'not implemented'."""


class WriteConflict(Exception):
    """A conditional write found the object changed since it was read, or created when it
    was to be new: another writer is at work on the same prefix."""


@dataclass(frozen=True)
class ConditionalWrites:
    """Which conditional PUT headers the store honours, as measured by :meth:`S3Store.
    probe_conditional_writes` (a store may also accept a header and ignore it)."""

    if_none_match: bool  # If-None-Match: * refused with 412 when the key exists
    if_match: bool  # If-Match: <etag> refused with 412 when the ETag differs

    def describe(self) -> str:
        headers = (("If-None-Match", self.if_none_match), ("If-Match", self.if_match))
        honoured = [header for header, ok in headers if ok]
        ignored = [header for header, ok in headers if not ok]
        text = (
            f"honours {' and '.join(honoured)} on PUT" if honoured else "honours no conditional PUT"
        )
        if ignored:
            text += (
                f"; without {' and '.join(ignored)} the trainer reads before it writes, which "
                "narrows but cannot close the window for a concurrent writer"
            )
        return text


# Assumed until measured: a write falls back when the store says it does not implement one.
_ASSUMED = ConditionalWrites(if_none_match=True, if_match=True)


class S3Store:
    """Artifact operations on one bucket, every network call retried with backoff."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        retry: RetryPolicy | None = None,
        role: S3Role | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self.role = role
        # How messages name the store: the location's endpoint, else the client's (AWS).
        meta = getattr(client, "meta", None)
        self.endpoint = str(endpoint or getattr(meta, "endpoint_url", None) or "the S3 endpoint")
        self.conditional = _ASSUMED

    @classmethod
    def for_location(
        cls, location: S3Location, role: S3Role, *, retry: RetryPolicy | None = None
    ) -> S3Store:
        client = make_client(location, role)
        return cls(client, location.bucket, retry=retry, role=role, endpoint=location.endpoint)

    def _call(self, action: Callable[[], T], what: str) -> T:
        """``action`` with retries. A failed request comes out as the trainer's own error,
        whose text names the location's field, the endpoint or URI and the fix, and never
        what the store answered or how the connection failed (remote_errors.py); the store
        error stays behind it, for the callers' decisions and for the log. A refused bucket
        or credentials is a config error (the run exits 78: retrying the pod would meet the
        same answer); any other failure may pass (exit 1, retried)."""
        try:
            return with_retries(action, what=what, policy=self.retry, fatal=is_fatal)
        except Exception as exc:
            if not is_remote(exc):
                raise  # the trainer's own, or the local disk's
            problem = s3_problem(
                exc, role=self.role, endpoint=self.endpoint, bucket=self.bucket, what=what
            )
            expected = _error_code(exc) in _EXPECTED_CODES
            log.log(
                logging.DEBUG if expected else logging.WARNING,
                "the %s failed: %s",
                what,
                details(exc),
            )
            if problem.refused:
                raise InvalidConfig(problem.message) from exc
            raise RemoteFailure(problem.message) from exc

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
        try:
            self.conditional = self.probe_conditional_writes(key)
        finally:
            self.delete_key(key, what=f"test delete of {self.uri(key)} {what.format('delete')}")
        log.info(
            "%s %s",
            self.uri(prefix) if prefix else f"s3://{self.bucket}",
            self.conditional.describe(),
        )

    def probe_conditional_writes(self, key: str) -> ConditionalWrites:
        """Measure which conditional PUT headers the store honours, on ``key``, an object
        that exists: a second create with If-None-Match: * must be refused, and so must a
        write with If-Match on an ETag it does not have. A header the store refuses to
        implement (501) or accepts and ignores (the write goes through) counts as not
        honoured. ``key`` is overwritten with its own content."""
        data = b"write probe\n"

        def refused(**condition: str) -> bool:
            try:
                self._call(
                    lambda: self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=data, **condition
                    ),
                    f"conditional write probe of {self.uri(key)}",
                )
            except Exception as exc:
                code = _error_code(exc)
                if code in _PRECONDITION_CODES:
                    return True
                if code in _UNSUPPORTED_CODES:
                    return False
                raise
            return False

        return ConditionalWrites(
            if_none_match=refused(IfNoneMatch="*"),
            if_match=refused(IfMatch='"' + "0" * 32 + '"'),
        )

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

    def _put_conditionally(
        self, key: str, data: bytes, content_type: str, condition: dict[str, str]
    ) -> None:
        """One PUT with ``condition``; WriteConflict when the store refuses it (412),
        _HeaderUnsupported when it does not implement it."""
        try:
            self._call(
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **condition
                ),
                f"conditional write of {self.uri(key)}",
            )
        except Exception as exc:
            if _error_code(exc) in _PRECONDITION_CODES:
                raise WriteConflict(
                    f"{self.uri(key)} changed while it was being written "
                    f"({', '.join(condition)} refused the write): another writer is at work "
                    "on this prefix"
                ) from exc
            if is_not_found(exc) and "IfMatch" in condition:
                raise WriteConflict(
                    f"{self.uri(key)} was deleted while it was being replaced: another writer "
                    "is at work on this prefix"
                ) from exc
            if _error_code(exc) in _UNSUPPORTED_CODES:
                raise _HeaderUnsupported(str(exc)) from exc
            raise

    def _no_longer_assume(self, header: str, why: Exception) -> None:
        log.warning(
            "s3://%s does not implement %s on PUT (%s); reading before writing instead",
            self.bucket,
            header,
            why,
        )
        field = "if_none_match" if header == "If-None-Match" else "if_match"
        self.conditional = dataclasses.replace(self.conditional, **{field: False})

    def head_etag(self, key: str) -> str | None:
        """The object's ETag, or None when there is no such object."""

        def head() -> str | None:
            try:
                return str(self.client.head_object(Bucket=self.bucket, Key=key)["ETag"])
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise

        return self._call(head, f"read of {self.uri(key)}")

    def put_new(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Create ``key``, which must not exist: If-None-Match: * where the store honours
        it, else a check just before the write (a narrower race). WriteConflict if it
        exists."""
        if self.conditional.if_none_match:
            try:
                self._put_conditionally(key, data, content_type, {"IfNoneMatch": "*"})
                return
            except _HeaderUnsupported as exc:
                self._no_longer_assume("If-None-Match", exc)
        if self.head_etag(key) is not None:
            raise WriteConflict(f"{self.uri(key)} already exists: another writer created it")
        self.put_bytes(key, data, content_type)

    def put_replacing(
        self, key: str, data: bytes, etag: str | None, content_type: str = "application/json"
    ) -> None:
        """Write ``key`` only if it is still what was read: the object with ``etag``, or
        none when ``etag`` is None. If-Match / If-None-Match where the store honours them,
        else a check just before the write. WriteConflict otherwise."""
        if etag is None:
            self.put_new(key, data, content_type)
            return
        if self.conditional.if_match:
            try:
                self._put_conditionally(key, data, content_type, {"IfMatch": etag})
                return
            except _HeaderUnsupported as exc:
                self._no_longer_assume("If-Match", exc)
        if self.head_etag(key) != etag:
            raise WriteConflict(f"{self.uri(key)} changed since it was read: another writer")
        self.put_bytes(key, data, content_type)

    def delete_replacing(self, key: str, etag: str) -> None:
        """Delete ``key`` only if it still has ``etag`` (If-Match where honoured, else a
        check just before the delete). WriteConflict otherwise."""
        if self.conditional.if_match:
            try:
                self._call(
                    lambda: self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag),
                    f"conditional delete of {self.uri(key)}",
                )
                return
            except Exception as exc:
                if _error_code(exc) in _PRECONDITION_CODES or is_not_found(exc):
                    raise WriteConflict(
                        f"{self.uri(key)} changed since it was read: another writer"
                    ) from exc
                if _error_code(exc) not in _UNSUPPORTED_CODES:
                    raise
                # Some stores honour If-Match on PUT but not on DELETE: read, then delete.
                log.info("s3://%s does not implement If-Match on DELETE (%s)", self.bucket, exc)
        if self.head_etag(key) != etag:
            raise WriteConflict(f"{self.uri(key)} changed since it was read: another writer")
        self.delete_key(key)

    def delete_key(self, key: str, what: str | None = None) -> None:
        """Delete one object (no error when there is none); ``what`` as for put_bytes."""
        self._call(
            lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
            what or f"delete of {self.uri(key)}",
        )

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        found = self.get_with_etag(key, max_bytes)
        return found[0] if found is not None else None

    def get_with_etag(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is no such object. With
        ``max_bytes``, a larger object is an ObjectTooLarge error, unread."""

        def get() -> tuple[bytes, str] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
            body = response["Body"]
            try:
                if max_bytes is not None and int(response.get("ContentLength", 0)) > max_bytes:
                    raise ObjectTooLarge(f"{self.uri(key)} is larger than {max_bytes} bytes")
                data = body.read() if max_bytes is None else body.read(max_bytes + 1)
            finally:
                body.close()
            if max_bytes is not None and len(data) > max_bytes:
                raise ObjectTooLarge(f"{self.uri(key)} is larger than {max_bytes} bytes")
            return bytes(data), str(response.get("ETag", ""))

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

    def list_sizes(self, prefix: str, limit: int) -> dict[str, int]:
        """Every key under ``prefix`` (a '/' is appended) with its size; ObjectTooLarge
        (unread further) when there are more than ``limit``."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""

        def page_all() -> dict[str, int]:
            paginator = self.client.get_paginator("list_objects_v2")
            sizes: dict[str, int] = {}
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    sizes[obj["Key"]] = int(obj.get("Size", 0))
                if len(sizes) > limit:
                    raise ObjectTooLarge(f"{self.uri(prefix)} holds more than {limit} objects")
            return sizes

        return self._call(page_all, f"listing of {self.uri(prefix)}")

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
        """Upload every file under ``root`` to ``prefix``; the file named ``last`` (the
        manifest) goes up only after all the others succeeded, and only as a new object
        (:meth:`put_new`: a manifest already there means another writer). Returns the
        byte count."""
        files = sorted(p for p in root.rglob("*") if p.is_file())
        total = 0
        for path in files:
            name = path.relative_to(root).as_posix()
            if name != last:
                self.upload_file(path, join_key(prefix, name))
                total += path.stat().st_size
        closing = root / last if last else None
        if closing is not None and closing.is_file():
            data = closing.read_bytes()
            self.put_new(join_key(prefix, last or ""), data)
            total += len(data)
        return total

    def download_prefix(self, prefix: str, root: Path) -> int:
        """Download everything under ``prefix`` into ``root`` (created); returns file count.
        Every key is checked before anything is downloaded: one that would land outside
        ``root`` (a '..' segment), alias another (an empty or '.' segment), or be both a
        file and a directory is refused (UnsafeKey)."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        base = root.resolve()
        names: dict[str, str] = {}
        for key in self.list_keys(prefix):
            rel = key[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue  # a "directory" marker
            problem = relative_name_problem(rel)
            if problem is not None and ("'..'" in problem or "absolute" in problem):
                raise KeyOutsideDirectory(f"refusing S3 key outside the download directory: {key}")
            if problem is not None:
                raise UnsafeKey(f"refusing S3 key {key}: below {self.uri(prefix)} it {problem}")
            if base not in (base / rel).resolve().parents:
                raise KeyOutsideDirectory(f"refusing S3 key outside the download directory: {key}")
            names[rel] = key
        for rel in names:
            parent = rel.rsplit("/", 1)[0] if "/" in rel else None
            while parent is not None:
                if parent in names:
                    raise UnsafeKey(
                        f"refusing S3 key {names[rel]}: {names[parent]} is an object, so it "
                        "cannot also be a directory"
                    )
                parent = parent.rsplit("/", 1)[0] if "/" in parent else None
        for rel, key in sorted(names.items()):
            self.download_file(key, root / rel)
        return len(names)


class ObjectTooLarge(ValueError):
    """An object or a listing larger than the caller accepts to read."""


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
