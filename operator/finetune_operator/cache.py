"""What the watches delivered: every FineTuneJob, its Job and its trainer pods, in memory.

The reconciler reads the world from here instead of asking the API server on every event
and every poll: a FineTuneJob that nothing happens to costs no request at all, however
many of them are queued. The watches fill the cache (kopf's indexing pass, which runs for
the whole initial listing before any handler does, so a restarted operator sees every
Job before it decides that one is missing); the operator's own writes are recorded as
they return, so the next reconcile does not act on the state from before them.

Objects are trimmed to the fields the operator reads, so memory grows with the number of
objects, not with their managed fields, pod specs or other owners' annotations. A deleted
object leaves nothing behind but its uid, for a while, among the recently deleted (so a
write that returns after the deletion cannot bring it back), except a trainer pod's last
word: a pod deleted on suspend or eviction writes its checkpoint into its termination
message and may be gone before any reconcile reads it, so the newest such pod of each
FineTuneJob is kept (``departed_trainer``).

The cache also notices when a watch stops delivering: every write the operator makes is
expected back through its watch; one that has not come back within ``echo_deadline``
seconds means the stream is stuck, and the liveness check says so.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from finetune_api.status import Phase

from .naming import ANNOTATION_CONFIG_HASH, LABEL_OWNER, LABEL_OWNER_UID, TRAINER_CONTAINER

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of a FineTuneJob

# Enough to outlast any write still in flight when its object was deleted.
_TOMBSTONES = 4096
_MAX_PENDING_ECHOES = 10_000


@dataclass(frozen=True)
class Trainer:
    """A running trainer pod the progress poller may read: it belongs to the Job the
    FineTuneJob owns (not merely labelled as if it did)."""

    key: Key
    pod_uid: str
    pod_ip: str


def _pick(source: Obj, keys: Iterable[str]) -> Obj:
    return {k: source[k] for k in keys if k in source}


_META = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp", "creationTimestamp")


def trim_finetunejob(body: Obj) -> Obj:
    return {
        **_pick(body, ("apiVersion", "kind", "spec", "status")),
        "metadata": _pick(body.get("metadata") or {}, (*_META, "generation")),
    }


def trim_job(body: Obj) -> Obj:
    meta = body.get("metadata") or {}
    trimmed = _pick(meta, (*_META, "labels", "ownerReferences"))
    annotations = meta.get("annotations") or {}
    if ANNOTATION_CONFIG_HASH in annotations:
        trimmed["annotations"] = {ANNOTATION_CONFIG_HASH: annotations[ANNOTATION_CONFIG_HASH]}
    spec = body.get("spec") or {}
    return {
        **_pick(body, ("apiVersion", "kind", "status")),
        "metadata": trimmed,
        # The template stays: adopting a Job means checking that it runs what the operator
        # would have made.
        "spec": _pick(
            spec,
            (
                "suspend",
                "backoffLimit",
                "activeDeadlineSeconds",
                "ttlSecondsAfterFinished",
                "template",
                "podFailurePolicy",
                "podReplacementPolicy",
                "completions",
                "parallelism",
            ),
        ),
    }


def trim_pod(body: Obj) -> Obj:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = body.get("status") or {}
    return {
        **_pick(body, ("apiVersion", "kind")),
        "metadata": {
            **_pick(meta, (*_META, "ownerReferences")),
            "labels": _pick(labels, (LABEL_OWNER, LABEL_OWNER_UID)),
        },
        "status": _pick(
            status, ("phase", "conditions", "containerStatuses", "podIP", "startTime", "reason")
        ),
    }


def _finished_at(pod: Obj) -> str | None:
    """When the pod's trainer container terminated (RFC 3339), if it did."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                return str(terminated.get("finishedAt") or "")
    return None


def _version(value: object) -> int | None:
    """A resourceVersion as a number (the API server's are etcd revisions), or None."""
    try:
        return int(str(value))
    except ValueError:
        return None


def _newer_or_same(old: Obj | None, new: Obj) -> bool:
    """Whether ``new`` may replace ``old``. resourceVersions are opaque, but the API server's
    are etcd revisions: compared as numbers they keep a late watch event from undoing the
    cache's record of a newer write. Anything else replaces."""
    if old is None:
        return True
    before = old["metadata"].get("resourceVersion")
    after = new["metadata"].get("resourceVersion")
    try:
        return int(after) >= int(before)
    except (TypeError, ValueError):
        return True


def owner_key(body: Obj) -> Key | None:
    """The FineTuneJob a Job or pod belongs to, by its owner label."""
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(LABEL_OWNER)
    namespace = meta.get("namespace")
    return (namespace, owner) if owner and namespace else None


def _controller(body: Obj, kind: str) -> str | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


class ClusterCache:
    """Thread-safe: the event loop writes, reconcile workers and the poller read. Readers get
    copies, so nothing they change reaches the cache."""

    def __init__(
        self, *, echo_deadline: float = 150.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.echo_deadline = echo_deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._finetunejobs: dict[Key, Obj] = {}
        self._jobs: dict[Key, Obj] = {}  # by (namespace, name)
        self._job_keys: dict[str, Key] = {}  # Job uid -> (namespace, name)
        self._pods: dict[str, Obj] = {}  # by uid
        self._pods_by_owner: dict[str, set[str]] = {}  # FineTuneJob uid -> pod uids
        self._deleted: OrderedDict[str, None] = OrderedDict()
        # FineTuneJob uid -> its trainer pod deleted last after its container terminated.
        self._departed: OrderedDict[str, Obj] = OrderedDict()
        # uid -> (resourceVersion written, when, what): writes not yet seen on a watch.
        self._echoes: dict[str, tuple[str, float, str]] = {}
        # uid -> the newest resourceVersion a watch delivered: a write whose event arrived
        # before the write's own response returned is not waited for.
        self._watched: dict[str, int] = {}

    # --- fed by the watches ---------------------------------------------------------------
    def upsert(self, body: Obj) -> None:
        """An object as a watch delivered it (ADDED, MODIFIED, or the initial listing)."""
        with self._lock:
            self._store(body, from_watch=True)

    def remove(self, body: Obj) -> None:
        """A DELETED event."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        with self._lock:
            if uid:
                self._deleted[uid] = None
                self._deleted.move_to_end(uid)
                while len(self._deleted) > _TOMBSTONES:
                    self._deleted.popitem(last=False)
                self._echoes.pop(uid, None)
                self._watched.pop(uid, None)
            key = (meta.get("namespace"), meta.get("name"))
            kind = body.get("kind")
            if kind == "Pod":
                self._keep_last_word(self._pods.get(uid))
                self._drop_pod(uid)
                return
            if kind == "FineTuneJob":
                self._departed.pop(uid, None)
            store = self._jobs if kind == "Job" else self._finetunejobs
            current = store.get(key)  # type: ignore[arg-type]
            # Only the object that was deleted: a new one of the same name may be cached.
            if current is not None and current["metadata"].get("uid") == uid:
                del store[key]  # type: ignore[arg-type]
            if kind == "Job":
                self._job_keys.pop(uid, None)

    # --- fed by the operator's own writes --------------------------------------------------
    def record_write(self, body: Obj, what: str) -> None:
        """An object as the API server returned it from the operator's create or patch. It
        is expected back on its watch (see ``stuck_watch``)."""
        with self._lock:
            uid = body.get("metadata", {}).get("uid")
            if uid in self._deleted:
                return
            self._store(body, from_watch=False)
            version = _version(body["metadata"].get("resourceVersion"))
            if not uid or version is None or self._watched.get(uid, -1) >= version:
                return
            if len(self._echoes) < _MAX_PENDING_ECHOES:
                self._echoes[uid] = (str(version), self._clock(), what)

    def _store(self, body: Obj, *, from_watch: bool) -> None:
        """Keep ``body`` unless the cache has a newer version of it."""
        kind = body.get("kind")
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if from_watch and uid:
            seen = _version(meta.get("resourceVersion"))
            if seen is not None:
                self._watched[uid] = max(seen, self._watched.get(uid, -1))
            if uid in self._echoes and (seen is None or seen >= int(self._echoes[uid][0])):
                del self._echoes[uid]
        key: Key = (meta.get("namespace"), meta.get("name"))  # type: ignore[assignment]
        if kind == "Pod":
            trimmed = trim_pod(body)
            old = self._pods.get(uid)
            if not _newer_or_same(old, trimmed):
                return
            # Labels can be edited: a pod relabelled to another owner leaves the first.
            self._drop_pod(uid)
            owner = trimmed["metadata"]["labels"].get(LABEL_OWNER_UID)
            self._pods[uid] = trimmed
            if owner:
                self._pods_by_owner.setdefault(owner, set()).add(uid)
        elif kind == "Job":
            trimmed = trim_job(body)
            old = self._jobs.get(key)
            if not _newer_or_same(old, trimmed):
                return
            if old is not None:  # a Job of the same name may be a new one
                self._job_keys.pop(old["metadata"].get("uid"), None)
            self._jobs[key] = trimmed
            self._job_keys[uid] = key
        elif kind == "FineTuneJob":
            trimmed = trim_finetunejob(body)
            old = self._finetunejobs.get(key)
            if not _newer_or_same(old, trimmed):
                return
            self._finetunejobs[key] = trimmed

    # --- fed by the periodic listing (resync.py) ---------------------------------------------
    def unlisted(
        self, kind: str, namespace: str | None, listed: set[str], snapshot: str
    ) -> list[Obj]:
        """The objects of ``kind`` (in ``namespace``; None: all) that a listing at
        resourceVersion ``snapshot`` did not return, though the cache has seen none of
        them change after it: deleted while a watch was down, whose DELETED event no
        watch will ever deliver (a watch that reconnects lists again, and a listing has
        no deletions). They leave the cache as a DELETED event would take them, and are
        returned."""
        at = _version(snapshot)
        if at is None:
            return []
        stores: dict[str, dict[Any, Obj]] = {
            "Pod": self._pods,
            "Job": self._jobs,
            "FineTuneJob": self._finetunejobs,
        }
        with self._lock:
            held = list(stores[kind].values())
        gone = []
        for body in held:
            meta = body["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                continue
            uid = str(meta.get("uid") or "")
            seen = _version(meta.get("resourceVersion"))
            if uid in listed or seen is None or seen > at:
                continue
            self.remove({**body, "kind": kind})
            gone.append(body)
        return gone

    def _keep_last_word(self, pod: Obj | None) -> None:
        """Keep a deleted trainer pod whose container terminated, if it ended after the
        one kept for its FineTuneJob."""
        finished = _finished_at(pod) if pod is not None else None
        owner = pod["metadata"]["labels"].get(LABEL_OWNER_UID) if pod is not None else None
        if pod is None or finished is None or not owner:
            return
        kept = self._departed.get(owner)
        if kept is not None and (_finished_at(kept) or "") > finished:
            return
        self._departed[owner] = pod
        self._departed.move_to_end(owner)
        while len(self._departed) > _TOMBSTONES:
            self._departed.popitem(last=False)

    def _drop_pod(self, uid: str | None) -> None:
        pod = self._pods.pop(uid or "", None)
        if pod is None:
            return
        owner = pod["metadata"]["labels"].get(LABEL_OWNER_UID)
        siblings = self._pods_by_owner.get(owner or "")
        if siblings is not None:
            siblings.discard(uid or "")
            if not siblings:
                del self._pods_by_owner[owner or ""]

    # --- read by the reconciler ------------------------------------------------------------
    # A stored object is never changed in place (an update stores a new one), so a reader
    # copies it outside the lock, and no reader holds up the watches for a copy's time.
    def finetunejob(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            found = self._finetunejobs.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def job(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            found = self._jobs.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def trainer_pods(self, owner_uid: str) -> list[Obj]:
        """The pods labelled as this FineTuneJob's (the reconciler checks which of them its
        Job really made)."""
        with self._lock:
            found = (self._pods.get(uid) for uid in self._pods_by_owner.get(owner_uid, ()))
            pods = [pod for pod in found if pod is not None]
        return copy.deepcopy(pods)

    def departed_trainer(self, owner_uid: str) -> Obj | None:
        """The FineTuneJob's trainer pod deleted last after its container terminated (the
        reconciler checks that its Job made it)."""
        with self._lock:
            found = self._departed.get(owner_uid)
        return copy.deepcopy(found) if found is not None else None

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._finetunejobs)

    def phases(self) -> Counter[str]:
        """FineTuneJobs by the phase their status records (for the operator's gauge)."""
        with self._lock:
            return Counter(
                (ftj.get("status") or {}).get("phase") or Phase.PENDING
                for ftj in self._finetunejobs.values()
            )

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {
                "finetunejobs": len(self._finetunejobs),
                "jobs": len(self._jobs),
                "pods": len(self._pods),
            }

    # --- read by the progress poller -------------------------------------------------------
    def running_trainers(self) -> list[Trainer]:
        """Trainer pods whose container runs, made by the Job their FineTuneJob owns."""
        found = []
        with self._lock:
            for uid, pod in self._pods.items():
                status = pod.get("status") or {}
                ip = status.get("podIP")
                if status.get("phase") != "Running" or not ip:
                    continue
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                running = any(
                    c.get("name") == TRAINER_CONTAINER and "running" in (c.get("state") or {})
                    for c in status.get("containerStatuses") or []
                )
                key = owner_key(pod)
                if not running or key is None:
                    continue
                job_key = self._job_keys.get(_controller(pod, "Job") or "")
                ftj = self._finetunejobs.get(key)
                job = self._jobs.get(job_key) if job_key else None
                if job is None or ftj is None:
                    continue
                if _controller(job, "FineTuneJob") != ftj["metadata"].get("uid"):
                    continue
                found.append(Trainer(key=key, pod_uid=uid, pod_ip=str(ip)))
        return found

    # --- read by the liveness check --------------------------------------------------------
    def stuck_watch(self) -> str | None:
        """The oldest of the operator's writes that no watch has delivered back within
        ``echo_deadline`` seconds, or None."""
        now = self._clock()
        with self._lock:
            late = [
                (since, what)
                for _version, since, what in self._echoes.values()
                if now - since > self.echo_deadline
            ]
        if not late:
            return None
        since, what = min(late)
        # The probe's answer names no FineTuneJob; the log does.
        log.warning("the watch has not delivered the operator's write of %s back", what)
        return (
            f"a watch has not delivered the operator's own writes back for "
            f"{now - since:.0f}s ({len(late)} such writes)"
        )
