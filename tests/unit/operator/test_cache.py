"""The watch cache: trimmed objects, newest version wins, deletions leave nothing, and
writes that no watch brings back are noticed."""

from __future__ import annotations

import copy
import threading

from finetune_operator.cache import ClusterCache
from finetune_operator.naming import LABEL_OWNER, LABEL_OWNER_UID

from .cluster_objects import finetunejob, job_of, pod_of


def test_objects_are_trimmed_to_what_the_operator_reads() -> None:
    cache = ClusterCache()
    ftj = finetunejob("run")
    cache.upsert(ftj)
    cache.upsert(job_of(ftj))
    cache.upsert(pod_of(ftj, "10.0.0.1"))
    job = cache.job("ml", job_of(ftj)["metadata"]["name"])
    assert job is not None and "managedFields" not in job["metadata"]
    assert "selector" not in job["spec"] and "template" in job["spec"]
    (pod,) = cache.trainer_pods("ftj-run")
    assert "spec" not in pod  # the pod spec (env, volumes) is never read
    assert set(pod["metadata"]["labels"]) == {LABEL_OWNER, LABEL_OWNER_UID}


def test_readers_get_copies() -> None:
    cache = ClusterCache()
    cache.upsert(finetunejob("run", phase="Running"))
    found = cache.finetunejob("ml", "run")
    assert found is not None
    found["status"]["phase"] = "Failed"
    assert cache.finetunejob("ml", "run")["status"]["phase"] == "Running"  # type: ignore[index]


def test_an_older_version_does_not_replace_a_newer_one() -> None:
    cache = ClusterCache()
    newer = finetunejob("run", phase="Running")
    newer["metadata"]["resourceVersion"] = "20"
    cache.record_write(newer, "status")  # the operator's own write, as returned
    late = finetunejob("run", phase="Pending")  # the watch catching up
    cache.upsert(late)
    assert cache.finetunejob("ml", "run")["status"]["phase"] == "Running"  # type: ignore[index]


def test_a_deleted_object_leaves_nothing_and_cannot_come_back() -> None:
    cache = ClusterCache()
    ftj = finetunejob("run")
    cache.upsert(ftj)
    cache.upsert(job_of(ftj))
    cache.upsert(pod_of(ftj, "10.0.0.1"))
    cache.remove(pod_of(ftj, "10.0.0.1"))
    cache.remove(job_of(ftj))
    cache.remove(ftj)
    assert cache.sizes() == {"finetunejobs": 0, "jobs": 0, "pods": 0}
    assert cache._pods_by_owner == {} and cache._job_keys == {}
    cache.record_write(ftj, "a status write that returned after the deletion")
    assert cache.finetunejob("ml", "run") is None


def test_a_new_object_of_a_deleted_ones_name_is_kept() -> None:
    cache = ClusterCache()
    old = finetunejob("run")
    new = finetunejob("run")
    new["metadata"]["uid"] = "another-uid"
    cache.upsert(new)
    cache.remove(old)  # the older object's DELETED event, late
    assert cache.finetunejob("ml", "run") is not None


def test_phases_count_what_the_statuses_say() -> None:
    cache = ClusterCache()
    cache.upsert(finetunejob("a", phase="Running"))
    cache.upsert(finetunejob("b", phase="Running"))
    cache.upsert(finetunejob("c"))
    assert cache.phases() == {"Running": 2, "Pending": 1}


def test_a_write_the_watch_never_brings_back_is_a_stuck_watch() -> None:
    now = [0.0]
    cache = ClusterCache(echo_deadline=150, clock=lambda: now[0])
    written = finetunejob("run", phase="Running")
    written["metadata"]["resourceVersion"] = "30"
    cache.record_write(written, "the status of FineTuneJob ml/run")
    now[0] = 100.0
    assert cache.stuck_watch() is None
    now[0] = 200.0
    assert "for 200s (1 such writes)" in (cache.stuck_watch() or "")
    echoed = finetunejob("run", phase="Running")
    echoed["metadata"]["resourceVersion"] = "30"
    cache.upsert(echoed)
    assert cache.stuck_watch() is None


def test_an_older_event_is_not_the_echo_of_a_write() -> None:
    now = [0.0]
    cache = ClusterCache(echo_deadline=10, clock=lambda: now[0])
    written = finetunejob("run")
    written["metadata"]["resourceVersion"] = "30"
    cache.record_write(written, "status")
    cache.upsert(finetunejob("run"))  # resourceVersion 10: from before the write
    now[0] = 11.0
    assert cache.stuck_watch() is not None


def test_concurrent_readers_and_writers() -> None:
    cache = ClusterCache()
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for index in range(300):
                ftj = finetunejob(f"run-{offset}-{index}")
                cache.upsert(ftj)
                cache.upsert(pod_of(ftj, "10.0.0.1"))
                cache.remove(pod_of(ftj, "10.0.0.1"))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(300):
                cache.running_trainers()
                cache.phases()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.sizes() == {"finetunejobs": 900, "jobs": 0, "pods": 0}


def test_a_write_whose_event_came_first_is_not_waited_for() -> None:
    """Under load the watch can deliver a write's event before the write's own response
    returns; the write must not then count as never echoed."""
    now = [0.0]
    cache = ClusterCache(echo_deadline=10, clock=lambda: now[0])
    written = finetunejob("run", phase="Running")
    written["metadata"]["resourceVersion"] = "30"
    cache.upsert(written)  # the event
    cache.record_write(written, "status")  # then the response
    now[0] = 11.0
    assert cache.stuck_watch() is None


def test_a_relabelled_pod_moves_to_its_new_owner() -> None:
    cache = ClusterCache()
    first, second = finetunejob("first"), finetunejob("second")
    pod = pod_of(first, "10.0.0.1")
    cache.upsert(pod)
    moved = copy.deepcopy(pod)
    moved["metadata"]["resourceVersion"] = "13"
    moved["metadata"]["labels"][LABEL_OWNER_UID] = second["metadata"]["uid"]
    cache.upsert(moved)
    assert cache.trainer_pods("ftj-first") == []
    assert [p["metadata"]["uid"] for p in cache.trainer_pods("ftj-second")] == ["pod-first"]
    cache.remove(moved)
    assert cache.trainer_pods("ftj-second") == [] and cache._pods_by_owner == {}


def test_a_listing_finds_what_was_deleted_while_a_watch_was_down() -> None:
    cache = ClusterCache()
    kept, deleted = finetunejob("kept"), finetunejob("gone")
    late = finetunejob("late")  # created after the listing's snapshot
    late["metadata"]["resourceVersion"] = "60"
    for body in (kept, deleted, late):
        cache.upsert(body)
    gone = cache.unlisted("FineTuneJob", "ml", {"ftj-kept"}, "50")
    assert [g["metadata"]["name"] for g in gone] == ["gone"]
    assert sorted(key[1] for key in cache.keys()) == ["kept", "late"]  # noqa: SIM118
    # A write that returns after the deletion cannot bring it back.
    cache.record_write(deleted, "status")
    assert cache.finetunejob("ml", "gone") is None
    # Another namespace's objects are not judged by this namespace's listing.
    cache.upsert(finetunejob("elsewhere", namespace="other"))
    assert [g["metadata"]["name"] for g in cache.unlisted("FineTuneJob", "ml", set(), "70")] == [
        "kept",
        "late",
    ]
    assert cache.finetunejob("other", "elsewhere") is not None
    # A listing without a resourceVersion to judge by removes nothing.
    assert cache.unlisted("FineTuneJob", None, set(), "") == []


def test_a_deleted_trainer_pod_leaves_its_last_word() -> None:
    cache = ClusterCache()
    owner = finetunejob("a")
    uid = owner["metadata"]["uid"]
    never_ran = pod_of(owner, "10.0.0.1", name="early")
    cache.upsert(never_ran)
    cache.remove(never_ran)
    assert cache.departed_trainer(uid) is None  # it never terminated
    running = pod_of(owner, "10.0.0.2")
    cache.upsert(running)
    stopped = copy.deepcopy(running)
    stopped["metadata"]["resourceVersion"] = "13"
    stopped["status"]["containerStatuses"] = [
        {"name": "trainer", "state": {"terminated": {"exitCode": 75, "finishedAt": "T2"}}}
    ]
    cache.upsert(stopped)
    cache.remove(stopped)
    kept = cache.departed_trainer(uid)
    assert kept is not None and kept["metadata"]["name"] == "a-pod"
    assert cache.trainer_pods(uid) == []
    cache.remove(owner)
    assert cache.departed_trainer(uid) is None
