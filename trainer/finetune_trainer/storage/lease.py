"""The output lease: which trainer may write an output location now.

A small JSON object in the output (``.output-lease.json`` in the directory, or under the
S3 prefix) names its holder, the config fingerprint it trains, when it was last renewed
and for how long that holds. A trainer acquires it before it touches anything in the
output, renews it from a background thread well inside its duration, and releases it when
it exits. The same holder (the next pod of the same FineTuneJob, with the same
``FTO_RUN_ID``) takes it over at once, and so does anyone when it expired (a holder killed
without releasing it) or when it ran on this host under a process that no longer runs.
Another holder's lease that has not expired is watched: renewed meanwhile, its holder is
alive and this trainer is refused (OutputInUse); expired unrenewed, it is taken over. So a
pod that replaces a killed one (a new host name and process id, when ``FTO_RUN_ID`` is not
set) waits at most one lease duration, and a second run on a busy output is refused within
one renewal interval.

Every change is conditional on what was just read, so two trainers racing for one lease
never both win: on a directory the lease is created with an exclusive link and replaced by
first renaming the one read out of the way (only one renamer gets it); on S3 through the
store's conditional writes (If-None-Match / If-Match on its ETag).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from finetune_api.contract import Env
from finetune_api.safe_text import safe_text

from ..errors import OutputInUse
from ..remote_errors import bounded
from .fsutil import NotRegularFile, fsync_dir, open_regular, remove_tree
from .s3 import ObjectTooLarge, S3Store, WriteConflict

log = logging.getLogger(__name__)

LEASE_NAME = ".output-lease.json"
# A lease is a few hundred bytes; anything larger is not one of ours.
MAX_LEASE_BYTES = 64 * 1024
# Long enough to ride out a slow renewal (an S3 request retried with backoff), short enough
# that a trainer killed without releasing it holds up the next writer only briefly.
DEFAULT_LEASE_SECONDS = 45.0
# Renewals per duration: a missed one or two still leave the lease live.
_RENEWALS_PER_DURATION = 3
_ACQUIRE_ATTEMPTS = 4
# How long a renewal waits before reading a lease that was not there a second time.
_REREAD_SECONDS = 0.2
# How often a lease held elsewhere is read again while watching whether it is renewed.
_WATCH_POLL_SECONDS = 1.0
# How much of a holder's name a message repeats (the lease is anyone's to write).
_NAME_LIMIT = 200
# The most a lease may say it holds for, and the largest process id Linux hands out.
MAX_LEASE_SECONDS = 600.0
_MAX_PID = 2**22


def holder_identity() -> str:
    """This trainer's identity as a lease holder: ``FTO_RUN_ID`` (the operator's
    FineTuneJob uid, the same for each of its pods), else host name and process id."""
    run_id = os.environ.get(Env.RUN_ID, "").strip()
    if run_id:
        return bounded(run_id, _NAME_LIMIT)
    return f"{socket.gethostname()}/pid-{os.getpid()}"


class LeaseRecord(BaseModel):
    """The lease's content."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    # Anyone who may write the output may write this: every number is bounded, so a forged
    # or clock-skewed lease cannot make a starting trainer wait longer than one duration.
    holder: str
    host: str = ""
    pid: int | None = Field(None, ge=1, le=_MAX_PID)
    fingerprint: str = ""
    renewed_at: float = Field(allow_inf_nan=False)  # Unix time, seconds
    duration_seconds: float = Field(gt=0, le=MAX_LEASE_SECONDS, allow_inf_nan=False)

    def expires_in(self, now: float) -> float:
        """Seconds left; never more than one duration, so a holder whose clock runs ahead
        of this one still expires within a duration of being read."""
        return min(self.renewed_at + self.duration_seconds - now, self.duration_seconds)

    def died_here(self) -> bool:
        """Whether the holder ran on this host under a process id that no longer runs: a
        trainer killed without releasing its lease (the same host name and process ids
        mean the same machine, or the same pod: a pod's host name is its own)."""
        if self.host != socket.gethostname() or self.pid is None or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except (OSError, OverflowError):  # running, under another user
            return False
        return False

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode() + b"\n"

    def describe(self, now: float) -> str:
        who = _name(self.holder, _NAME_LIMIT)
        host = f" on {_name(self.host, _NAME_LIMIT)}" if self.host else ""
        fingerprint = f", config fingerprint {_name(self.fingerprint, 80)}"
        return (
            f"run {who}{host}{fingerprint if self.fingerprint else ''}, renewed "
            f"{max(0.0, now - self.renewed_at):.0f}s ago"
        )


def _name(value: str, limit: int) -> str:
    """A name read from a lease, as one line of text fit for a log line or a status."""
    return safe_text(" ".join(value.splitlines()), limit)


def parse_lease(raw: bytes) -> LeaseRecord | None:
    """The lease in ``raw``, or None when it is not one (then anyone may replace it)."""
    if len(raw) > MAX_LEASE_BYTES:
        return None
    try:
        return LeaseRecord.model_validate_json(raw)
    except ValidationError:
        return None


class LeaseLapsed(Exception):
    """The lease went unrenewed for a whole duration; writes wait for a renewal."""

    def __init__(self, lease: OutputLease) -> None:
        super().__init__(
            f"the output lease {lease.store.uri} went unrenewed for {lease.duration:.0f}s "
            f"(the store did not answer); nothing more is written to {lease.output_uri} until "
            "a renewal confirms this trainer still holds it"
        )


class LeaseTaken(Exception):
    """The lease changed between reading and writing it: another trainer is at it."""


class LeaseStore(Protocol):
    """Where one lease lives. ``read`` returns the raw content and a token for it (None when
    there is no lease); ``create`` and ``replace`` raise LeaseTaken when the lease is no
    longer what the caller read."""

    uri: str

    def read(self) -> tuple[bytes, object] | None: ...

    def create(self, data: bytes) -> None: ...

    def replace(self, data: bytes, token: object) -> None: ...

    def delete(self, token: object) -> None: ...


class DirectoryLease:
    """The lease as a file in a local or PVC directory."""

    def __init__(self, path: Path, uri: str) -> None:
        self.path = path
        self.uri = uri

    def _read_path(self, path: Path) -> bytes | None:
        try:
            with open_regular(path) as (fd, _info):
                return os.read(fd, MAX_LEASE_BYTES + 1)
        except FileNotFoundError:
            return None
        except NotRegularFile:
            return b""  # not ours: replaced like any unreadable lease

    def read(self) -> tuple[bytes, object] | None:
        raw = self._read_path(self.path)
        return None if raw is None else (raw, raw)

    def create(self, data: bytes) -> None:
        """Write a temporary file and link it to the lease's name: the name appears with
        its whole content, and only if it did not exist."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.new")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise LeaseTaken(f"{self.uri} was created by another trainer") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(self.path.parent)

    def _take(self, token: object) -> None:
        """Rename the lease read as ``token`` out of the way; only one renamer gets it. One
        that changed meanwhile is put back and LeaseTaken raised."""
        aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.old")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            raise LeaseTaken(f"{self.uri} was removed by another trainer") from None
        try:
            if self._read_path(aside) != token:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                raise LeaseTaken(f"{self.uri} was changed by another trainer")
        finally:
            with contextlib.suppress(FileNotFoundError):
                remove_tree(aside)  # a directory, too, where a lease was expected

    def replace(self, data: bytes, token: object) -> None:
        self._take(token)
        self.create(data)

    def delete(self, token: object) -> None:
        self._take(token)
        fsync_dir(self.path.parent)


class S3Lease:
    """The lease as an object under an S3 output prefix."""

    def __init__(self, store: S3Store, key: str) -> None:
        self.store = store
        self.key = key
        self.uri = store.uri(key)

    def read(self) -> tuple[bytes, object] | None:
        try:
            return self.store.get_with_etag(self.key, MAX_LEASE_BYTES)
        except ObjectTooLarge:
            etag = self.store.head_etag(self.key)
            return None if etag is None else (b"", etag)

    def create(self, data: bytes) -> None:
        try:
            self.store.put_new(self.key, data)
        except WriteConflict as exc:
            raise LeaseTaken(str(exc)) from exc

    def replace(self, data: bytes, token: object) -> None:
        try:
            self.store.put_replacing(self.key, data, str(token))
        except WriteConflict as exc:
            raise LeaseTaken(str(exc)) from exc

    def delete(self, token: object) -> None:
        try:
            self.store.delete_replacing(self.key, str(token))
        except WriteConflict as exc:
            raise LeaseTaken(str(exc)) from exc


class OutputLease:
    """This trainer's lease on one output location."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        output_uri: str,
        fingerprint: str,
        holder: str | None = None,
        duration: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.output_uri = output_uri
        self.fingerprint = fingerprint
        self.holder = holder or holder_identity()
        self.duration = duration
        self.held = False
        # Set when another trainer took the lease over while this one held it.
        self.lost: str | None = None
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return LeaseRecord(
            holder=self.holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            fingerprint=self.fingerprint,
            renewed_at=time.time(),
            duration_seconds=self.duration,
        ).to_bytes()

    def acquire(self) -> None:
        """Take the lease: create it, or take over one of our own, an expired one, or one
        whose holder turns out to be gone. A lease of another holder that is not expired
        is watched until it is renewed (the holder is alive: OutputInUse) or expires
        unrenewed (the holder died without releasing it: taken over)."""
        watched: LeaseRecord | None = None
        for _attempt in range(_ACQUIRE_ATTEMPTS):
            found = self.store.read()
            try:
                if found is None:
                    self.store.create(self._record())
                else:
                    raw, token = found
                    record = parse_lease(raw)
                    if self._live_elsewhere(record, watched):
                        assert record is not None
                        watched = record
                        self._watch(raw, record)
                        continue
                    self.store.replace(self._record(), token)
            except LeaseTaken as exc:
                log.warning("%s; reading it again", exc)
                continue
            self.held = True
            self._renewed = time.monotonic()
            log.info(
                "holding the output lease %s as %s (renewed every %.0fs, held %.0fs)",
                self.store.uri,
                self.holder,
                self.duration / _RENEWALS_PER_DURATION,
                self.duration,
            )
            return
        raise OutputInUse(
            f"the output lease {self.store.uri} changed {_ACQUIRE_ATTEMPTS} times while this "
            "trainer tried to take it: other trainers are starting on the same output. Give "
            "each FineTuneJob its own output (output.pvc.path or output.s3.uri)."
        )

    def _live_elsewhere(self, record: LeaseRecord | None, watched: LeaseRecord | None) -> bool:
        """Whether ``record`` is another holder's lease that may be live, to be watched;
        False when it may be taken over now. OutputInUse when ``watched`` (the lease as
        first read) has been renewed since by its holder, which is therefore alive."""
        now = time.time()
        if record is None:
            log.warning("%s is not a lease this trainer can read; replacing it", self.store.uri)
            return False
        if record.holder == self.holder:
            log.info("taking over the output lease of this run's previous attempt")
            return False
        if watched is not None and record == watched:
            log.warning(
                "taking over the output lease of %s: not renewed while watched for %.0fs",
                record.describe(now),
                record.duration_seconds,
            )
            return False
        left = record.expires_in(now)
        if left > 0 and record.died_here():
            log.warning(
                "taking over the output lease of %s: its process no longer runs",
                record.describe(now),
            )
            return False
        if left <= 0:
            log.warning(
                "taking over the expired output lease of %s (it ended %.0fs ago without "
                "being released)",
                record.describe(now),
                -left,
            )
            return False
        if watched is not None and record.holder == watched.holder:
            raise OutputInUse(
                f"the output {self.output_uri} is in use by another trainer "
                f"({record.describe(now)}, and renewing its lease). Two runs must not write "
                "one output: give this FineTuneJob its own output (output.pvc.path or "
                "output.s3.uri), or wait for the other run to end."
            )
        return True

    def _watch(self, raw: bytes, record: LeaseRecord) -> None:
        """Wait until the lease read as ``raw`` changes (renewed, released or taken) or
        expires: a live holder renews it well before, a dead one never does."""
        now = time.time()
        left = record.expires_in(now)
        log.info(
            "the output %s is leased to %s; waiting up to %.0fs to see whether that trainer "
            "is alive (it renews the lease) or gone (the lease expires)",
            self.output_uri,
            record.describe(now),
            left,
        )
        deadline = time.monotonic() + left + _WATCH_POLL_SECONDS
        while time.monotonic() < deadline:
            time.sleep(min(_WATCH_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            current = self.store.read()
            if current is None or current[0] != raw:
                return

    def renew(self) -> bool:
        """Renew the lease; False (and ``lost`` set) when another trainer holds it now."""
        found = self.store.read()
        if found is None:
            # Another trainer's replace moves the file aside for a moment: look once more.
            time.sleep(_REREAD_SECONDS)
            found = self.store.read()
        record = parse_lease(found[0]) if found is not None else None
        if found is None or record is None or record.holder != self.holder:
            now = time.time()
            other = record.describe(now) if record is not None else "nobody"
            self.lost = f"the output lease {self.store.uri} is now held by {other}"
            return False
        try:
            self.store.replace(self._record(), found[1])
        except LeaseTaken as exc:
            # A conditional write retried after its answer was lost is refused for the
            # change it made itself: the lease is still ours if it names this process.
            again = self.store.read()
            mine = parse_lease(again[0]) if again is not None else None
            if mine is None or (mine.holder, mine.host, mine.pid) != (
                self.holder,
                socket.gethostname(),
                os.getpid(),
            ):
                self.lost = f"the output lease {self.store.uri} was taken over: {exc}"
                return False
        self._renewed = time.monotonic()
        return True

    def lapsed(self) -> bool:
        """Whether the lease went unrenewed for a whole duration (an outage of the store):
        another trainer may have taken it over meanwhile, so nothing is written until a
        renewal confirms it is still this one's."""
        return time.monotonic() - self._renewed > self.duration

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.duration / _RENEWALS_PER_DURATION
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.error("%s; this trainer no longer owns its output", self.lost)
                    self.held = False
                    return
            except Exception as exc:  # the next renewal may pass (S3 back, say)
                log.warning("renewing the output lease %s failed: %s", self.store.uri, exc)

    def release(self) -> None:
        """Stop renewing and remove the lease when it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.held:
            return
        self.held = False
        try:
            found = self.store.read()
            record = parse_lease(found[0]) if found is not None else None
            if found is not None and record is not None and record.holder == self.holder:
                self.store.delete(found[1])
                log.info("released the output lease %s", self.store.uri)
        except Exception as exc:  # it expires by itself
            log.warning(
                "releasing the output lease %s failed (%s); it expires in %.0fs",
                self.store.uri,
                exc,
                self.duration,
            )
