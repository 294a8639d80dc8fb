"""The output lease, on a real directory and on the real S3-compatible server (versitygw):
acquire, renew, take over (same holder, expired), refuse (another live holder), release;
and the refusal of an output holding another config's artifacts."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import S3Location
from finetune_trainer.errors import IncompatibleCheckpoint, InvalidInput, OutputInUse
from finetune_trainer.resume import check_output_fingerprints
from finetune_trainer.storage.lease import (
    LEASE_NAME,
    DirectoryLease,
    LeaseRecord,
    LeaseStore,
    LeaseTaken,
    OutputLease,
    S3Lease,
    holder_identity,
)
from finetune_trainer.storage.retry import RetryPolicy
from finetune_trainer.storage.s3 import S3Store
from finetune_trainer.storage.targets import LocalTarget

from .test_checkpoints import commit, write_fake_checkpoint

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture(params=["directory", "s3"])
def lease_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LeaseStore:
    if request.param == "directory":
        return DirectoryLease(tmp_path / "out" / LEASE_NAME, f"{tmp_path}/out/{LEASE_NAME}")
    server: Any = request.getfixturevalue("s3_server")
    monkeypatch.setenv("FTO_S3_OUTPUT_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("FTO_S3_OUTPUT_SECRET_ACCESS_KEY", server.secret_key)
    bucket = server.create_bucket(f"lease-{uuid.uuid4().hex[:10]}")
    location = S3Location(
        uri=f"s3://{bucket}/runs/a", endpoint=server.endpoint, region=server.region
    )
    store = S3Store.for_location(location, "output", retry=FAST)
    return S3Lease(store, f"runs/a/{LEASE_NAME}")


def lease(store: LeaseStore, holder: str, duration: float = 60.0, fp: str = "fp") -> OutputLease:
    return OutputLease(
        store, output_uri="the-output", fingerprint=fp, holder=holder, duration=duration
    )


def held_by(store: LeaseStore) -> LeaseRecord:
    found = store.read()
    assert found is not None
    return LeaseRecord.model_validate_json(found[0])


def test_the_first_trainer_takes_the_lease(lease_store: LeaseStore) -> None:
    mine = lease(lease_store, "run-a", fp="fp-a")
    mine.acquire()
    record = held_by(lease_store)
    assert (record.holder, record.fingerprint, record.duration_seconds) == ("run-a", "fp-a", 60.0)
    assert abs(record.renewed_at - time.time()) < 30


def test_another_live_holder_is_refused_naming_the_output_and_the_holder(
    lease_store: LeaseStore,
) -> None:
    alive = lease(lease_store, "run-a", duration=1.5, fp="fp-a")
    alive.acquire()
    alive.start_renewing()
    started = time.monotonic()
    try:
        with pytest.raises(OutputInUse) as refused:
            lease(lease_store, "run-b").acquire()
        assert time.monotonic() - started < 4  # refused once it saw a renewal
        assert held_by(lease_store).holder == "run-a"
    finally:
        alive.release()
    assert isinstance(refused.value, InvalidInput)  # exit 78
    assert refused.value.reason == "OutputInUse"
    text = str(refused.value)
    assert "the output the-output is in use by another trainer" in text
    assert "run run-a" in text and "fp-a" in text
    assert "its own output" in text


def test_the_same_run_takes_its_lease_over_at_once(lease_store: LeaseStore) -> None:
    lease(lease_store, "run-a").acquire()  # a pod that died without releasing it
    again = lease(lease_store, "run-a", fp="fp-2")
    again.acquire()
    assert again.held
    assert held_by(lease_store).fingerprint == "fp-2"


def test_an_expired_lease_is_taken_over(lease_store: LeaseStore) -> None:
    lease(lease_store, "run-a", duration=0.5).acquire()
    time.sleep(0.7)
    other = lease(lease_store, "run-b")
    other.acquire()
    assert held_by(lease_store).holder == "run-b"


def test_renewal_moves_the_time_and_notices_a_takeover(lease_store: LeaseStore) -> None:
    mine = lease(lease_store, "run-a", duration=0.5)
    mine.acquire()
    first = held_by(lease_store).renewed_at
    time.sleep(0.05)
    assert mine.renew()
    assert held_by(lease_store).renewed_at > first
    time.sleep(0.7)
    lease(lease_store, "run-b").acquire()  # expired meanwhile: taken over
    assert not mine.renew()
    assert mine.lost is not None and "run run-b" in mine.lost


def test_a_holder_that_stopped_renewing_is_taken_over_once_its_lease_expires(
    lease_store: LeaseStore,
) -> None:
    """A pod killed without releasing the lease: the next one (another host name and
    process id without FTO_RUN_ID) waits for the lease to expire unrenewed."""
    lease(lease_store, "killed", duration=2.0).acquire()
    started = time.monotonic()
    lease(lease_store, "next").acquire()
    assert 1.0 <= time.monotonic() - started < 10
    assert held_by(lease_store).holder == "next"


def test_the_renewal_thread_keeps_a_short_lease_live(lease_store: LeaseStore) -> None:
    mine = lease(lease_store, "run-a", duration=0.6)
    mine.acquire()
    mine.start_renewing()
    try:
        time.sleep(1.5)  # over twice its duration
        with pytest.raises(OutputInUse):
            lease(lease_store, "run-b").acquire()
    finally:
        mine.release()
    assert lease_store.read() is None


def test_release_leaves_another_holders_lease_alone(lease_store: LeaseStore) -> None:
    mine = lease(lease_store, "run-a", duration=0.3)
    mine.acquire()
    time.sleep(0.5)
    lease(lease_store, "run-b").acquire()
    mine.release()
    assert held_by(lease_store).holder == "run-b"


def test_a_lease_that_is_not_ours_is_replaced(lease_store: LeaseStore) -> None:
    lease_store.create(b"not json at all")
    lease(lease_store, "run-a").acquire()
    assert held_by(lease_store).holder == "run-a"


@pytest.mark.parametrize(
    "forged",
    [
        {"durationSeconds": 1e300},  # held "forever"
        {"renewedAt": "Infinity"},
        {"pid": 2**70},  # os.kill would overflow
        {"pid": -1},  # a process group
    ],
)
def test_a_forged_lease_is_replaced_not_waited_on(
    lease_store: LeaseStore, forged: dict[str, Any]
) -> None:
    """Anyone who may write the output may write the lease: numbers out of bounds make it
    no lease at all, so a starting trainer neither waits on it for ever nor crashes."""
    record = {"holder": "x", "host": os.uname().nodename, "pid": 1, "renewedAt": time.time()}
    record |= {"durationSeconds": 30.0} | forged
    lease_store.create(json.dumps(record).encode())
    started = time.monotonic()
    lease(lease_store, "run-a").acquire()
    assert held_by(lease_store).holder == "run-a"
    assert time.monotonic() - started < 5


def test_a_lease_dated_in_the_future_is_watched_for_one_duration_at_most(
    lease_store: LeaseStore,
) -> None:
    """A holder whose clock runs an hour ahead: unrenewed while watched for one duration,
    it is taken over rather than waited on for the hour."""
    record = {"holder": "ahead", "renewedAt": time.time() + 3600, "durationSeconds": 1.0}
    lease_store.create(json.dumps(record).encode())
    started = time.monotonic()
    lease(lease_store, "run-a").acquire()
    assert held_by(lease_store).holder == "run-a"
    assert time.monotonic() - started < 10


def test_a_holder_name_with_control_characters_reaches_the_message_escaped(
    lease_store: LeaseStore,
) -> None:
    lease(lease_store, "run-\x1b[31mred\nline", duration=30.0).acquire()
    with pytest.raises(OutputInUse) as refused:
        other = lease(lease_store, "run-b", duration=30.0)
        seen = held_by(lease_store)  # as first read; renewed since
        other._live_elsewhere(seen, seen.model_copy(update={"renewed_at": seen.renewed_at - 1}))
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)


def test_two_trainers_racing_for_one_lease_never_both_win(tmp_path: Path) -> None:
    """Creating a lease where there is none, and replacing the one read, each succeed for
    exactly one of many at once."""
    store = DirectoryLease(tmp_path / LEASE_NAME, str(tmp_path / LEASE_NAME))

    def race(action: Callable[[int], None]) -> list[int]:
        won: list[int] = []
        barrier = threading.Barrier(8)

        def contend(i: int) -> None:
            barrier.wait()
            try:
                action(i)
                won.append(i)
            except LeaseTaken:
                pass

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return won

    created = race(lambda i: store.create(f"created by {i}".encode()))
    assert len(created) == 1
    found = store.read()
    assert found is not None and found[0] == f"created by {created[0]}".encode()
    replaced = race(lambda i: store.replace(f"replaced by {i}".encode(), found[1]))
    assert len(replaced) == 1
    assert store.read() is not None
    assert store.read()[0] == f"replaced by {replaced[0]}".encode()  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEASE_NAME]  # no temporaries left


def test_holder_identity_is_the_run_id_else_host_and_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTO_RUN_ID", "0b9a-uid")
    assert holder_identity() == "0b9a-uid"
    monkeypatch.setenv("FTO_RUN_ID", "x" * 5000)
    assert len(holder_identity()) < 300  # bounded: the lease is anyone's to read
    monkeypatch.delenv("FTO_RUN_ID")
    import socket

    assert holder_identity() == f"{socket.gethostname()}/pid-{os.getpid()}"


def test_the_lease_file_is_json_a_person_can_read(tmp_path: Path) -> None:
    store = DirectoryLease(tmp_path / LEASE_NAME, str(tmp_path / LEASE_NAME))
    lease(store, "run-a", fp="fp-a").acquire()
    value = json.loads((tmp_path / LEASE_NAME).read_text())
    assert {"holder", "host", "fingerprint", "renewedAt", "durationSeconds"} <= set(value)


# --- another config's artifacts ----------------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> LocalTarget:
    root = tmp_path / "out"
    t = LocalTarget(root, str(root))
    t.prepare()
    return t


def test_an_older_checkpoint_of_another_config_is_refused(target: LocalTarget) -> None:
    commit(target.artifacts, 10, fingerprint="theirs")
    commit(target.artifacts, 20, fingerprint="mine")
    with pytest.raises(IncompatibleCheckpoint) as refused:
        check_output_fingerprints(target, "mine")
    text = str(refused.value)
    assert f"checkpoint-10 {target.uri('checkpoint-10')}" in text
    assert "fingerprint theirs" in text and "this config is mine" in text
    assert "new output path" in text and "delete the old output" in text


def test_a_final_adapter_of_another_config_is_refused(target: LocalTarget) -> None:
    written = write_fake_checkpoint(target.artifacts, 5)
    target.artifacts.commit(
        written,
        "final_model",
        kind="final_model",
        step=5,
        fingerprint="theirs",
        started_at="2026-01-01T00:00:00Z",
    )
    with pytest.raises(IncompatibleCheckpoint, match="final_model"):
        check_output_fingerprints(target, "mine")


def test_own_and_accepted_fingerprints_and_incomplete_leftovers_pass(
    target: LocalTarget,
) -> None:
    commit(target.artifacts, 10, fingerprint="legacy")
    commit(target.artifacts, 20, fingerprint="mine")
    (target.artifacts.root / "checkpoint-30").mkdir()  # incomplete: no manifest
    check_output_fingerprints(target, "mine", {"legacy"})


def test_a_holder_killed_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    """Outside the operator (no FTO_RUN_ID) the next run on the same machine must not wait
    for the lease of a trainer that was SIGKILLed to expire."""
    import socket
    import subprocess
    import sys

    store = DirectoryLease(tmp_path / LEASE_NAME, str(tmp_path / LEASE_NAME))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    record = LeaseRecord(
        holder="killed",
        host=socket.gethostname(),
        pid=int(dead.stdout),
        renewed_at=time.time(),
        duration_seconds=600,
    )
    store.create(record.to_bytes())
    started = time.monotonic()
    lease(store, "next").acquire()
    assert time.monotonic() - started < 5  # not the lease's 600 s
    assert held_by(store).holder == "next"
    assert not record.model_copy(update={"pid": os.getppid()}).died_here()


def test_a_trainer_whose_lease_was_taken_over_commits_nothing_more(target: LocalTarget) -> None:
    store = target.lease_store()
    mine = lease(store, "run-a", duration=0.3)
    mine.acquire()
    target.lease = mine
    target.ensure_owned()  # still ours
    time.sleep(0.5)  # stalled past its expiry
    lease(store, "run-b").acquire()
    assert not mine.renew()
    with pytest.raises(OutputInUse, match="stopped writing"):
        target.ensure_owned()


def test_a_directory_where_the_lease_belongs_is_replaced(tmp_path: Path) -> None:
    (tmp_path / LEASE_NAME).mkdir()
    store = DirectoryLease(tmp_path / LEASE_NAME, str(tmp_path / LEASE_NAME))
    lease(store, "run-a").acquire()
    assert held_by(store).holder == "run-a"
