"""Reconcile against an in-memory API server and a real watch cache: what the operator
writes when the API server refuses a status, a spec has no durable output, a child's name
is taken, or the dataset's ConfigMap is missing."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from finetune_api.contract import CheckpointRef, TerminationMessage, TrainerProgress
from finetune_api.spec import DURABLE_OUTPUT_MESSAGE, RECREATE_FOR_OUTPUT, FineTuneJobSpec
from finetune_api.status import MAX_CONDITIONS, MAX_URI, FineTuneJobStatus
from finetune_operator.builders import Owner, build_job
from finetune_operator.cache import ClusterCache
from finetune_operator.config import OperatorConfig
from finetune_operator.events import EventRecorder
from finetune_operator.kube import (
    ChildConflict,
    ChildDeferred,
    ChildRejected,
    Kube,
    StatusRejected,
    conflict_message,
)
from finetune_operator.naming import LABEL_OWNER, LABEL_OWNER_UID
from finetune_operator.progress import ProgressBoard
from finetune_operator.reconciler import Reconciler
from finetune_operator.workqueue import Outcome

from .conftest import JOB_UID, UID, body, pod, terminated

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


class MemoryKube:
    """The API server, in memory: the objects, and the writes the reconciler makes on
    them. ``status_limit`` stands in for the CRD's status schema: a status with a longer
    string is refused as the API server would."""

    def __init__(self, ftj: dict[str, Any], status_limit: int | None = None) -> None:
        self.ftj = ftj
        self.status_limit = status_limit
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.patches: list[dict[str, Any]] = []
        self.rejected = 0
        self.events: list[tuple[str, str]] = []  # Event objects created
        self.event_counts: dict[str, int] = {}  # their count, as updated
        self.conflict_on_create = False
        self.quota_used_up = False
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.missing_claims: set[str] = set()  # every other claim exists
        self.deleted_jobs: list[tuple[str, str]] = []  # (name, uid precondition)
        self.version = 100

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def ensure(self, obj: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        meta = obj["metadata"]
        if self.quota_used_up:
            raise ChildDeferred(
                f"{obj['kind']} {meta['namespace']}/{meta['name']} does not fit the namespace's "
                "ResourceQuota: exceeded quota: jobs, requested: count/jobs.batch=1"
            )
        if self.conflict_on_create:
            problem = "it is not controlled by this FineTuneJob"
            raise ChildConflict(
                conflict_message(obj["kind"], meta["namespace"], meta["name"], problem)
            )
        assert obj["kind"] == "Job", "the operator creates Jobs only"
        stored = {
            **obj,
            "metadata": {**meta, "uid": JOB_UID, "resourceVersion": self._next_version()},
            "status": {},
        }
        self.jobs[meta["name"]] = stored
        return copy.deepcopy(stored), True

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.config_maps.get(name))

    def get_persistent_volume_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None if name in self.missing_claims else {"metadata": {"name": name}}

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self.deleted_jobs.append((name, uid))
        job = self.jobs.get(name)
        if job is not None and job["metadata"]["uid"] == uid:
            del self.jobs[name]
            self.pods = []  # the garbage collector's part

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs[name]
        job["spec"].update(patch["spec"])
        job["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(job)

    def patch_status(self, ftj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        if self.status_limit is not None and _longest_string(status) > self.status_limit:
            self.rejected += 1
            raise StatusRejected("status.output.adapterUri: Too long: may not be more than 1024")
        if ftj["metadata"]["resourceVersion"] != self.ftj["metadata"]["resourceVersion"]:
            return None  # written since: a conflict
        self.patches.append(status)
        self.ftj["status"] = merge_patch(self.ftj.get("status") or {}, status)
        self.ftj["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(self.ftj)

    def create_event(self, namespace: str, event: dict[str, Any]) -> str | None:
        self.events.append((event["type"], event["reason"]))
        name = f"event-{len(self.events)}"
        self.event_counts[name] = 1
        return name

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        self.event_counts[name] = patch["count"]
        return True


class Operator:
    """A Reconciler over MemoryKube, with a real ClusterCache that is handed the objects as
    the watches would deliver them before every reconcile."""

    KEY = ("ml", "gpt-oss-ml")

    def __init__(
        self,
        kube: MemoryKube,
        config: OperatorConfig | None = None,
        progress: ProgressBoard | None = None,
    ) -> None:
        self.kube = kube
        self.cache = ClusterCache()
        self.progress = progress or ProgressBoard()
        self.reconciler = Reconciler(
            kube,  # type: ignore[arg-type]
            self.cache,
            config or OperatorConfig(),
            clock=lambda: NOW,
            progress=self.progress,
            events=EventRecorder(kube),
        )
        self.outcome: Outcome | None = None
        self._delivered_pods: dict[str, dict[str, Any]] = {}

    def deliver(self) -> None:
        """What the watches bring: every object as it now is, deletions included."""
        kube = self.kube
        if kube.ftj is None:
            cached = self.cache.finetunejob(*self.KEY)
            if cached is not None:
                self.cache.remove(cached)
        else:
            self.cache.upsert({"kind": "FineTuneJob", **copy.deepcopy(kube.ftj)})
        for job in kube.jobs.values():
            self.cache.upsert({"kind": "Job", **copy.deepcopy(job)})
        pods = {}
        for item in kube.pods:
            delivered = watched_pod(item)
            pods[delivered["metadata"]["uid"]] = delivered
        for uid, gone in self._delivered_pods.items():
            if uid not in pods:
                self.cache.remove(gone)
        for delivered in pods.values():
            self.cache.upsert(delivered)
        self._delivered_pods = pods

    def reconcile(self) -> str | None:
        """Reconcile once; the phase the FineTuneJob's status holds afterwards (None when
        it no longer exists)."""
        self.deliver()
        self.outcome = self.reconciler.reconcile(self.KEY)
        self.reconciler.events.flush()
        if self.kube.ftj is None:
            return None
        return (self.kube.ftj.get("status") or {}).get("phase")


def watched_pod(item: dict[str, Any]) -> dict[str, Any]:
    """A test pod as the pod watch delivers it: kind, namespace, uid and owner labels."""
    delivered = copy.deepcopy(item)
    meta = delivered["metadata"]
    meta.setdefault("namespace", "ml")
    meta.setdefault("resourceVersion", "1")
    meta.setdefault("labels", {LABEL_OWNER: "gpt-oss-ml", LABEL_OWNER_UID: UID})
    return {"kind": "Pod", **delivered}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies the status patch: objects merge key by key,
    null removes a key, anything else (lists included) replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((_longest_string(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(v) for v in value), default=0)
    return 0


def reconciler(kube: MemoryKube) -> Operator:
    return Operator(kube)


def finished_pod(adapter_uri: str) -> dict[str, Any]:
    message = json.dumps({"status": "succeeded", "reason": "Completed", "adapterUri": adapter_uri})
    return pod("Succeeded", state=terminated(0, message, reason="Completed"))


def running_pod() -> dict[str, Any]:
    return pod("Running", state={"running": {}}, ip="10.0.0.7")


def condition(status: dict[str, Any], kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


class TestRefusedStatus:
    def completed(self, kube: MemoryKube, adapter_uri: str) -> None:
        reconciler(kube).reconcile()  # creates the Job
        job = next(iter(kube.jobs.values()))
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        kube.pods = [finished_pod(adapter_uri)]

    def running_then_refused(self, kube: MemoryKube) -> Reconciler:
        """The Job runs and is reported Running; then a status is refused (a too-long
        adapter URI in the outcome) while the Job is still there."""
        operator = reconciler(kube)
        operator.reconcile()  # creates the Job
        kube.pods = [running_pod()]
        assert operator.reconcile() == "Running"
        job = next(iter(kube.jobs.values()))
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        kube.pods = [finished_pod("s3://bucket/" + "p" * 1100 + "/final_model")]
        kube.status_limit = 1024
        return operator

    def test_is_reported_once_instead_of_failing_every_reconcile(self) -> None:
        kube = MemoryKube(body())
        operator = self.running_then_refused(kube)
        # Not an outcome: the phase stays what it was.
        assert operator.reconcile() == "Running"
        status = kube.ftj["status"]
        assert status["phase"] == "Running"
        assert status["reason"] == "StatusRejected"
        assert "Too long" in status["message"]
        assert "see Job" in status["message"]
        assert "completionTime" not in status
        assert condition(status, "Stalled") == "True"
        assert condition(status, "Reconciling") == "False"
        assert kube.events[-1] == ("Warning", "StatusRejected")
        # The next trigger meets the same refusal; it writes nothing new and does not raise.
        writes = len(kube.patches)
        assert operator.reconcile() == "Running"
        assert len(kube.patches) == writes

    def test_keeps_the_job_and_the_poller_following_it(self) -> None:
        kube = MemoryKube(body({"lifecycle": {"ttlSecondsAfterFinished": 0}}))
        operator = self.running_then_refused(kube)
        operator.reconcile()
        assert kube.ftj["status"]["reason"] == "StatusRejected"
        operator.reconcile()
        # No outcome is recorded, so nothing may clean the Job up yet.
        job = next(iter(kube.jobs.values()))
        assert job["spec"].get("ttlSecondsAfterFinished") is None

    def test_a_later_accepted_status_replaces_it(self) -> None:
        kube = MemoryKube(body({"lifecycle": {"ttlSecondsAfterFinished": 60}}))
        operator = self.running_then_refused(kube)
        operator.reconcile()
        assert kube.ftj["status"]["reason"] == "StatusRejected"
        kube.status_limit = None  # e.g. a CRD that allows the longer value is installed
        assert operator.reconcile() == "Succeeded"
        status = kube.ftj["status"]
        assert status["reason"] == "Succeeded"
        assert status["output"]["adapterUri"].endswith("/final_model")
        assert condition(status, "Stalled") == "False"
        assert condition(status, "Ready") == "True"
        assert kube.events[-1] == ("Normal", "Succeeded")
        # Now that the outcome is recorded, the Job may be cleaned up.
        operator.reconcile()
        assert next(iter(kube.jobs.values()))["spec"]["ttlSecondsAfterFinished"] == 60

    def test_every_uri_the_spec_allows_fits_the_status(self) -> None:
        # The longest S3 output prefix, plus the checkpoint directory the trainer adds.
        uri = "s3://bucket/" + "p" * (1024 - len("s3://bucket/")) + "/checkpoint-10000000"
        kube = MemoryKube(body({"output": {"s3": {"uri": "s3://bucket/p"}}}))
        self.completed(kube, uri)
        assert reconciler(kube).reconcile() == "Succeeded"
        assert kube.ftj["status"]["output"] == {"adapterUri": uri}
        FineTuneJobStatus.model_validate(kube.ftj["status"])
        assert len(uri) < MAX_URI


def without_durable_output(output: dict[str, Any] | None) -> dict[str, Any]:
    """A FineTuneJob admitted before the CRD required output.pvc or output.s3."""
    ftj = body()
    del ftj["spec"]["output"]
    if output is not None:
        ftj["spec"]["output"] = output
    return ftj


@pytest.mark.parametrize("output", [None, {"path": "/data/out"}])
class TestOutputWithoutDurableStorage:
    def test_gets_no_job(self, output: dict[str, Any] | None) -> None:
        kube = MemoryKube(without_durable_output(output))
        assert reconciler(kube).reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "InvalidSpec"
        assert status["message"] == (
            f"invalid spec: spec.output: {DURABLE_OUTPUT_MESSAGE}; {RECREATE_FOR_OUTPUT}"
        )
        assert "completionTime" in status
        assert kube.jobs == {}
        assert kube.events == [("Warning", "InvalidSpec")]

    def test_a_job_it_already_has_is_observed_and_reported(
        self, output: dict[str, Any] | None
    ) -> None:
        ftj = without_durable_output(output)
        kube = MemoryKube(ftj)
        # The Job an operator without the rule created for it.
        owner = Owner.from_body(ftj)
        spec = FineTuneJobSpec.model_validate(ftj["spec"])
        kube.ensure(build_job(spec, owner, OperatorConfig()), owner.uid)
        kube.ftj["status"] = {
            "phase": "Pending",
            "reason": "WaitingForPod",
            "jobName": owner.child_name,
        }
        kube.pods = [running_pod()]
        operator = reconciler(kube)
        assert operator.reconcile() == "Running"
        status = kube.ftj["status"]
        assert status["reason"] == "Running"
        assert condition(status, "Stalled") == "False"
        assert list(kube.jobs) == [owner.child_name]
        # Its trainer is one the progress poller reads.
        assert [t.key for t in operator.cache.running_trainers()] == [Operator.KEY]


def test_a_child_name_held_by_another_object_is_its_own_reason() -> None:
    kube = MemoryKube(body())
    kube.conflict_on_create = True
    assert reconciler(kube).reconcile() == "Failed"
    status = kube.ftj["status"]
    assert status["reason"] == "ChildConflict"
    assert "already exists and is not what the operator would make" in status["message"]
    assert "(it is not controlled by this FineTuneJob)" in status["message"]
    assert "delete that Job, and re-create the FineTuneJob" in status["message"]
    assert "invalid spec" not in status["message"]
    assert kube.events == [("Warning", "ChildConflict")]


class TestAJobItDidNotMake:
    """A Job of the child's name in the watch cache, before the FineTuneJob recorded one."""

    def planted(self, change: Any) -> MemoryKube:
        kube = MemoryKube(body())
        owner = Owner.from_body(kube.ftj)
        job = build_job(FineTuneJobSpec.model_validate(kube.ftj["spec"]), owner, OperatorConfig())
        change(job)
        kube.jobs[owner.child_name] = {
            **job,
            "metadata": {**job["metadata"], "uid": JOB_UID, "resourceVersion": "5"},
            "status": {},
        }
        return kube

    def test_one_it_does_not_control_is_never_taken(self) -> None:
        kube = self.planted(lambda job: job["metadata"].pop("ownerReferences"))
        assert reconciler(kube).reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "ChildConflict"
        assert "it is not controlled by this FineTuneJob" in status["message"]

    def test_one_that_runs_something_else_is_not_adopted(self) -> None:
        def add_env(job: dict[str, Any]) -> None:
            container = job["spec"]["template"]["spec"]["containers"][0]
            container["env"].append({"name": "AWS_ENDPOINT_URL", "value": "https://x.example"})

        kube = self.planted(add_env)
        assert reconciler(kube).reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "ChildConflict"
        assert "spec.template.spec.containers[0].env has other entries" in status["message"]

    @pytest.mark.parametrize(
        "field, value",
        [
            ("managedBy", "tenant.example/controller"),
            ("manualSelector", True),
            ("completionMode", "Indexed"),
        ],
    )
    def test_job_level_fields_the_cache_does_not_keep_are_judged_too(
        self, field: str, value: Any
    ) -> None:
        """The watch cache keeps only what the operator reads of a Job; adoption reads the
        whole Job from the API server."""
        kube = self.planted(lambda job: job["spec"].__setitem__(field, value))
        assert reconciler(kube).reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "ChildConflict"
        assert field in status["message"]

    def test_its_own_job_is_adopted_after_a_lost_status_write(self) -> None:
        # The operator made the Job; its status write failed before it recorded jobName.
        kube = self.planted(lambda job: None)
        assert reconciler(kube).reconcile() == "Pending"
        assert kube.ftj["status"]["reason"] == "WaitingForPod"
        assert kube.ftj["status"]["jobName"] in kube.jobs


def test_a_used_up_quota_waits_and_the_job_follows_once_it_allows() -> None:
    kube = MemoryKube(body())
    kube.quota_used_up = True
    operator = reconciler(kube)
    assert operator.reconcile() == "Pending"
    status = kube.ftj["status"]
    assert status["reason"] == "QuotaExceeded"
    assert "exceeded quota: jobs" in status["message"]
    assert "created once the quota allows it" in status["message"]
    # It clears by itself, as a pod waiting for a GPU does: progressing, not stalled.
    assert condition(status, "Stalled") == "False" and condition(status, "Reconciling") == "True"
    assert status.get("completionTime") is None
    # Tried again after the work queue's growing delay, as a failure would be.
    assert operator.outcome == Outcome(backoff=True)
    operator.reconcile()
    assert kube.events == [("Warning", "QuotaExceeded")]  # announced once
    kube.quota_used_up = False
    operator.reconcile()
    assert list(kube.jobs) and kube.ftj["status"]["reason"] == "WaitingForPod"
    assert condition(kube.ftj["status"], "Stalled") == "False"


class _Jobs:
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message

    def create_namespaced_job(self, *args: Any, **kwargs: Any) -> None:
        exc = ApiException(status=self.status, reason="Forbidden")
        exc.body = json.dumps({"message": self.message})
        raise exc


@pytest.mark.parametrize(
    "message, raised",
    [
        ('jobs.batch "j" is forbidden: exceeded quota: jobs, requested: ...', ChildDeferred),
        ('jobs.batch "j" is forbidden: status unknown for quota: jobs, ...', ChildDeferred),
        ('jobs.batch "j" is forbidden: violates PodSecurity "restricted"', ChildRejected),
    ],
)
def test_only_a_quota_refusal_is_retried(message: str, raised: type[Exception]) -> None:
    kube = Kube.__new__(Kube)
    kube.timeout = (1.0, 1.0)
    kube.batch = _Jobs(403, message)  # type: ignore[assignment]
    job = {"kind": "Job", "metadata": {"namespace": "ml", "name": "j"}}
    with pytest.raises(raised, match="is forbidden"):
        kube.ensure(job, "uid")


class _CustomObjects:
    def __init__(self, status: int) -> None:
        self.status = status

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        exc = ApiException(status=self.status, reason="Unprocessable Entity")
        exc.body = json.dumps({"message": "status.checkpoint.uri: Too long"})
        raise exc


@pytest.mark.parametrize("code", [409, 404])
def test_status_conflicts_are_retried(code: int) -> None:
    kube = Kube.__new__(Kube)
    kube.timeout = (1.0, 1.0)
    kube.custom = _CustomObjects(code)  # type: ignore[assignment]
    assert kube.patch_status(body(), {"phase": "Running"}) is None


def test_a_status_the_api_server_refuses_is_raised_with_its_message() -> None:
    kube = Kube.__new__(Kube)
    kube.timeout = (1.0, 1.0)
    kube.custom = _CustomObjects(422)  # type: ignore[assignment]
    with pytest.raises(StatusRejected, match=r"status\.checkpoint\.uri: Too long"):
        kube.patch_status(body(), {"phase": "Running"})


class TestDatasetConfigMap:
    SPEC = {"dataset": {"configMap": {"name": "chats", "key": "train.jsonl"}}}

    def status_while_starting(self, kube: MemoryKube) -> dict[str, Any]:
        operator = reconciler(kube)
        operator.reconcile()  # creates the Job
        kube.pods = [_starting_pod()]
        operator.reconcile()
        return kube.ftj["status"]

    def test_a_missing_config_map_is_named_while_the_pod_waits_for_it(self) -> None:
        status = self.status_while_starting(MemoryKube(body(self.SPEC)))
        assert status["phase"] == "Pending"
        assert status["reason"] == "DatasetConfigMapMissing"
        assert "ConfigMap chats does not exist in namespace ml; create it" in status["message"]

    def test_a_missing_key_is_named_with_the_keys_there_are(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        kube.config_maps["chats"] = {"data": {"train.json": "[]"}, "binaryData": {"b": ""}}
        status = self.status_while_starting(kube)
        assert status["reason"] == "DatasetConfigMapMissing"
        assert "has no key train.jsonl (its keys: b, train.json); add it" in status["message"]

    def test_a_config_map_with_thousands_of_keys_gives_a_status_that_fits(self) -> None:
        # Its keys are listed in the message; a tenant's ConfigMap may have any number.
        kube = MemoryKube(body(self.SPEC), status_limit=32768)
        kube.config_maps["chats"] = {"data": {f"key-{i:05d}\x1b[31m": "" for i in range(4000)}}
        status = self.status_while_starting(kube)
        assert status["reason"] == "DatasetConfigMapMissing"
        assert kube.rejected == 0
        assert len(status["message"]) <= 4096 and status["message"].endswith("characters]")
        assert "\x1b" not in status["message"] and "\\x1b[31m" in status["message"]
        for cond in status["conditions"]:
            assert len(cond["message"]) <= 4096

    def test_a_config_map_that_is_there_changes_nothing(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        kube.config_maps["chats"] = {"data": {"train.jsonl": "{}"}}
        assert self.status_while_starting(kube)["reason"] == "ContainerCreating"


def _starting_pod() -> dict[str, Any]:
    """A scheduled trainer pod whose container has not been created yet."""
    return pod(
        "Pending",
        state={"waiting": {"reason": "ContainerCreating"}},
        conditions=[{"type": "PodScheduled", "status": "True"}],
    )


def test_the_trainers_outcome_stays_while_the_job_is_cleaned_up() -> None:
    # ttlSecondsAfterFinished deletes the Job in the foreground: its pods go first. A
    # reconcile that reads the Job just before and lists the pods just after must keep the
    # trainer's reason, which no later read can recover.
    kube = MemoryKube(body({"lifecycle": {"ttlSecondsAfterFinished": 0}}))
    operator = reconciler(kube)
    operator.reconcile()  # creates the Job
    job = next(iter(kube.jobs.values()))
    job["status"] = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container trainer failed with exit code 78",
            }
        ]
    }
    message = json.dumps(
        {"status": "invalid_input", "reason": "InvalidDataset", "message": "dataset row 5: 'bot'"}
    )
    kube.pods = [pod("Failed", state=terminated(78, message))]
    assert operator.reconcile() == "Failed"
    assert kube.ftj["status"]["reason"] == "InvalidDataset"
    operator.reconcile()  # the outcome is recorded: the TTL goes on
    assert job["spec"]["ttlSecondsAfterFinished"] == 0
    kube.pods = []  # deleted by the clean-up, the Job not yet
    writes = len(kube.patches)
    assert operator.reconcile() == "Failed"
    status = kube.ftj["status"]
    assert (status["reason"], status["message"]) == ("InvalidDataset", "dataset row 5: 'bot'")
    assert len(kube.patches) == writes
    assert kube.events[-1] == ("Warning", "InvalidDataset")  # announced once, not undone


def test_a_stopped_run_is_not_rewritten_on_every_reconcile() -> None:
    kube = MemoryKube(body())
    live = TrainerProgress(
        step=12, total_steps=20, loss=1.7, epoch=0.05, learning_rate=1e-4, tokens_per_second=7800
    )
    operator = Operator(kube)
    operator.reconcile()  # creates the Job
    kube.pods = [running_pod()]
    operator.progress.record(Operator.KEY, "uid-p1", live)  # the poller's reading
    operator.reconcile()
    assert kube.ftj["status"]["progress"]["tokensPerSecond"] == 7800
    # The trainer stops (exit 75, e.g. a node drain) and waits for its retry.
    summary = json.dumps(
        {
            "status": "interrupted",
            "reason": "Interrupted",
            "step": 12,
            "totalSteps": 20,
            "loss": 1.7,
        }
    )
    kube.pods = [pod("Failed", state=terminated(75, summary))]
    operator.reconcile()
    writes = len(kube.patches)
    for _ in range(3):
        operator.reconcile()
    assert len(kube.patches) == writes
    assert kube.ftj["status"]["progress"]["step"] == 12
    assert len(operator.progress) == 0  # no trainer runs: its reading is dropped


def test_a_reading_from_another_pod_is_not_taken() -> None:
    # The progress board holds a reading for this FineTuneJob, but from a pod that is not
    # the one its Job runs (a pod someone labelled as if it were the trainer).
    kube = MemoryKube(body())
    operator = Operator(kube)
    operator.reconcile()
    kube.pods = [running_pod()]
    operator.progress.record(Operator.KEY, "pod-planted", TrainerProgress(step=19, total_steps=20))
    operator.reconcile()
    assert "progress" not in kube.ftj["status"]


class TestBookkeeping:
    """What the reconciler keeps per FineTuneJob, in step with the FineTuneJobs that exist,
    and what it does when its cache is behind the API server."""

    def test_a_conflicting_status_write_comes_back_later(self) -> None:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile()
        kube.pods = [running_pod()]
        operator.deliver()
        kube.ftj["metadata"]["resourceVersion"] = "999"  # written by someone else since
        operator.reconciler.reconcile(Operator.KEY)  # from the cache's older version
        assert kube.ftj["status"]["reason"] == "WaitingForPod"  # nothing written
        assert operator.reconciler.metrics.registry.get_sample_value(
            "finetune_operator_reconciles_total", {"result": "conflict"}
        )
        # The watch delivers the newer version; that reconcile writes.
        assert operator.reconcile() == "Running"

    def test_a_deleted_finetunejob_leaves_nothing_behind(self) -> None:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile()
        kube.pods = [running_pod()]
        operator.progress.record(Operator.KEY, "uid-p1", TrainerProgress(step=1))
        operator.reconcile()
        operator.reconciler.forget("ml", "gpt-oss-ml", UID)  # the DELETED event
        kube.ftj = None  # type: ignore[assignment]
        # Garbage collection of its Job and pods triggers more reconciles.
        assert operator.reconcile() is None
        assert len(operator.progress) == 0
        assert not operator.reconciler.events._posted
        gauge = operator.reconciler.metrics.registry.get_sample_value
        assert gauge("finetune_operator_finetunejobs", {"phase": "Running"}) in (None, 0)

    def test_it_makes_no_api_read_for_a_finetunejob_nothing_happens_to(self) -> None:
        kube = MemoryKube(body({"resources": {"gpus": 8}}))
        operator = reconciler(kube)
        operator.reconcile()
        kube.pods = [pod("Pending", conditions=[unschedulable()])]
        operator.reconcile()
        reads = []
        kube.get_job = lambda *a: reads.append(a)  # type: ignore[method-assign,assignment]
        kube.get_config_map = lambda *a: reads.append(a)  # type: ignore[method-assign,assignment]
        writes = len(kube.patches)
        for _ in range(5):
            operator.reconcile()
        assert reads == [] and len(kube.patches) == writes


def unschedulable() -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
    }


@pytest.mark.parametrize("old_pod_stays_listed", [True, False])
def test_a_replaced_trainer_is_one_restart(old_pod_stays_listed: bool) -> None:
    # A fails (or is evicted, its pod deleted), B waits to be scheduled, then runs: one
    # restart and one Restarted Event, whichever of these states the reconciles catch.
    kube = MemoryKube(body())
    operator = reconciler(kube)
    operator.reconcile()  # creates the Job
    kube.pods = [pod("Running", name="a", created="T1", state={"running": {}})]
    operator.reconcile()
    failed_a = pod("Failed", name="a", created="T1", state=terminated(1, "Traceback"))
    kube.pods = [failed_a]
    operator.reconcile()
    pending_b = pod("Pending", name="b", created="T3")
    kube.pods = [failed_a, pending_b] if old_pod_stays_listed else [pending_b]
    operator.reconcile()
    running_b = pod("Running", name="b", created="T3", state={"running": {}})
    kube.pods = [failed_a, running_b] if old_pod_stays_listed else [running_b]
    operator.reconcile()
    status = kube.ftj["status"]
    assert (status["restarts"], status["podName"]) == (1, "b")
    assert [e for e in kube.events if e[1] == "Restarted"] == [("Warning", "Restarted")]


def test_a_job_it_made_is_its_own_though_kueue_changed_it_before_the_status_said_so() -> None:
    """The status write after the create meets a conflict; meanwhile Kueue admits the Job
    and adds its flavor's nodeSelector. The Job is the operator's own all the same."""
    kube = MemoryKube(body({"scheduling": {"queueName": "gpus"}}))
    operator = Operator(kube)
    operator.deliver()
    kube.ftj["metadata"]["resourceVersion"] = "150"  # written by someone else since
    operator.reconciler.reconcile(operator.KEY)
    (job,) = kube.jobs.values()
    job["spec"]["template"]["spec"]["nodeSelector"] = {"cloud.example/flavor": "h100"}
    job["metadata"]["resourceVersion"] = kube._next_version()
    assert operator.reconcile() != "Failed"
    assert kube.ftj["status"]["jobName"] == job["metadata"]["name"]


def test_the_job_created_event_survives_a_status_conflict() -> None:
    """The status write after the Job's creation meets a newer FineTuneJob (someone edited
    it meanwhile): the next reconcile finds the Job in place, so the Event saying it was
    created is posted at once, not with a status that was never written."""
    kube = MemoryKube(body())
    operator = Operator(kube)
    operator.deliver()
    kube.ftj["metadata"]["resourceVersion"] = "150"  # written by someone else since
    operator.outcome = operator.reconciler.reconcile(operator.KEY)
    operator.reconciler.events.flush()
    assert kube.patches == [] and len(kube.jobs) == 1
    assert operator.outcome.retry_after is not None
    assert operator.reconcile() == "Pending"
    assert [reason for _, reason in kube.events].count("JobCreated") == 1


def test_a_malformed_stored_status_is_replaced_not_a_failed_reconcile() -> None:
    # Shapes no operator writes (the API server's schema keeps them out, but a reconcile
    # must not depend on it): each is read as absent, and the next status replaces it.
    kube = MemoryKube(body())
    operator = reconciler(kube)
    operator.reconcile()  # creates the Job
    kube.pods = [running_pod()]
    foreign = {"type": "QuotaReserved", "status": "True", "reason": "x", "lastTransitionTime": "T0"}
    kube.ftj["status"] = {
        **kube.ftj["status"],
        "phase": ["Running"],
        "restarts": "many",
        "checkpoint": "checkpoint-10",
        "progress": {"step": "twelve", "updatedAt": 7},
        "conditions": [foreign, "Ready", {"type": "Stalled"}],
    }
    assert operator.reconcile() == "Running"
    status = kube.ftj["status"]
    # What could not be read is removed, not left to be read and rewritten on every pass.
    assert status["restarts"] == 0 and kube.patches[-1]["checkpoint"] is None
    assert "checkpoint" not in status
    assert "progress" not in status
    assert [c["type"] for c in status["conditions"]][-1:] == ["QuotaReserved"]
    writes = len(kube.patches)
    assert operator.reconcile() == "Running"
    assert len(kube.patches) == writes


def test_conditions_other_writers_add_are_kept_only_as_far_as_the_schema_has_room() -> None:
    kube = MemoryKube(body())
    operator = reconciler(kube)
    operator.reconcile()  # creates the Job
    kube.pods = [running_pod()]
    foreign = [
        {"type": f"Other{i}", "status": "True", "reason": "x", "lastTransitionTime": "T0"}
        for i in range(MAX_CONDITIONS)
    ]
    kube.ftj["status"] = {**kube.ftj["status"], "conditions": foreign}
    assert operator.reconcile() == "Running"
    conditions = kube.ftj["status"]["conditions"]
    assert len(conditions) == MAX_CONDITIONS
    assert [c["type"] for c in conditions[:4]] == ["Ready", "Reconciling", "Stalled", "Suspended"]


class TestReferences:
    """Objects the spec names that the operator can read are checked before the Job."""

    def test_a_missing_claim_holds_the_job_back_until_it_exists(self) -> None:
        kube = MemoryKube(body({"dataset": {"pvc": {"claimName": "data"}}}))
        kube.missing_claims.add("data")
        operator = reconciler(kube)
        assert operator.reconcile() == "Pending"
        status = kube.ftj["status"]
        assert kube.jobs == {}
        assert status["reason"] == "ReferenceNotFound"
        assert status["message"].startswith(
            "spec.dataset.pvc.claimName: PersistentVolumeClaim data does not exist in "
            "namespace ml; create it"
        )
        assert condition(status, "Stalled") == "False"
        assert operator.outcome == Outcome(backoff=True)
        assert ("Warning", "ReferenceNotFound") in kube.events
        kube.missing_claims.clear()
        operator.reconcile()
        assert list(kube.jobs) == [kube.ftj["status"]["jobName"]]

    def test_a_missing_dataset_config_map_holds_the_job_back(self) -> None:
        kube = MemoryKube(body(TestDatasetConfigMap.SPEC))
        operator = reconciler(kube)
        operator.reconcile()
        assert kube.jobs == {}
        assert kube.ftj["status"]["reason"] == "DatasetConfigMapMissing"
        assert "the trainer Job is created once it exists" in kube.ftj["status"]["message"]
        kube.config_maps["chats"] = {"data": {"train.jsonl": "{}"}}
        operator.reconcile()
        assert len(kube.jobs) == 1

    def test_a_missing_eval_config_map_holds_the_job_back(self) -> None:
        held_out = {"configMap": {"name": "held-out", "key": "eval.jsonl"}}
        kube = MemoryKube(
            body(
                {
                    **TestDatasetConfigMap.SPEC,
                    "dataset": {**TestDatasetConfigMap.SPEC["dataset"], "eval": held_out},
                }
            )
        )
        kube.config_maps["chats"] = {"data": {"train.jsonl": "{}"}}
        operator = reconciler(kube)
        operator.reconcile()
        assert kube.jobs == {}
        status = kube.ftj["status"]
        assert status["reason"] == "DatasetConfigMapMissing"
        assert status["message"].startswith(
            "spec.dataset.eval.configMap.name: ConfigMap held-out does not exist in namespace "
        )
        kube.config_maps["held-out"] = {"data": {"train.jsonl": "{}"}}
        operator.reconcile()
        assert kube.jobs == {}
        assert kube.ftj["status"]["message"].startswith(
            "spec.dataset.eval.configMap.key: ConfigMap held-out in namespace "
        )
        kube.config_maps["held-out"] = {"data": {"eval.jsonl": "{}"}}
        operator.reconcile()
        assert len(kube.jobs) == 1

    def test_an_eval_s3_endpoint_on_cloud_metadata_is_not_allowed(self) -> None:
        evaluation = {"s3": {"uri": "s3://bkt/e", "endpoint": "http://169.254.169.254"}}
        kube = MemoryKube(body({"dataset": {"eval": evaluation}}))
        reconciler(kube).reconcile()
        assert kube.jobs == {}
        assert kube.ftj["status"]["reason"] == "NotAllowed"
        assert (
            "spec.dataset.eval.s3.endpoint: http://169.254.169.254 "
            in (kube.ftj["status"]["message"])
        )

    def test_a_config_map_deleted_after_the_job_was_made_is_still_named(self) -> None:
        kube = MemoryKube(body(TestDatasetConfigMap.SPEC))
        kube.config_maps["chats"] = {"data": {"train.jsonl": "{}"}}
        operator = reconciler(kube)
        operator.reconcile()
        assert len(kube.jobs) == 1
        del kube.config_maps["chats"]
        kube.pods = [_starting_pod()]
        operator.reconcile()
        assert kube.ftj["status"]["reason"] == "DatasetConfigMapMissing"
        assert "the trainer starts once it exists" in kube.ftj["status"]["message"]


class TestStartupDeadline:
    SPEC = {
        "output": {"s3": {"uri": "s3://bucket/run", "credentialsSecretRef": {"name": "creds"}}},
        "lifecycle": {"startupDeadlineSeconds": 60},
    }

    @staticmethod
    def stuck_pod(scheduled_at: str = "2026-01-01T11:59:30Z") -> dict[str, Any]:
        scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_at}
        waiting = {"reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}
        return pod(
            "Pending",
            created="2026-01-01T11:50:00Z",
            state={"waiting": waiting},
            conditions=[scheduled],
        )

    def operator_at(self, kube: MemoryKube, clock: list[datetime]) -> Operator:
        operator = reconciler(kube)
        operator.reconciler.clock = lambda: clock[0]
        return operator

    def test_before_the_deadline_the_kubelets_state_shows_and_a_look_is_scheduled(self) -> None:
        """Bound an hour ago (a long image pull, say) and stuck only now: the deadline runs
        from when the error was first seen, not from the binding."""
        kube = MemoryKube(body(self.SPEC))
        operator = reconciler(kube)
        operator.reconcile()
        kube.pods = [self.stuck_pod("2026-01-01T11:00:00Z")]
        assert operator.reconcile() == "Pending"
        assert kube.ftj["status"]["reason"] == "CreateContainerConfigError"
        assert operator.outcome == Outcome(retry_after=61.0)
        assert kube.deleted_jobs == []

    def test_past_the_deadline_the_job_goes_and_the_outcome_names_the_field(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        job_name = next(iter(kube.jobs))
        kube.pods = [self.stuck_pod()]
        assert operator.reconcile() == "Pending"
        clock[0] = NOW + timedelta(seconds=60)
        assert operator.reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "StartupFailed"
        assert status["message"].startswith(
            "spec.output.s3.credentialsSecretRef.name: Secret creds does not exist in "
            "namespace ml; create it"
        )
        assert "its Job was deleted to free the GPU" in status["message"]
        assert status["jobName"] == job_name and status["completionTime"]
        assert condition(status, "Stalled") == "True"
        # Deleted after the outcome was written, and with its uid as a precondition.
        assert kube.deleted_jobs == [(job_name, JOB_UID)] and kube.jobs == {}
        assert ("Warning", "StartupFailed") in kube.events
        # The Job's disappearance is not taken for a Job deleted before it finished.
        assert operator.reconcile() == "Failed"
        assert kube.ftj["status"]["reason"] == "StartupFailed"

    def test_a_trainer_that_starts_pulling_again_is_timed_afresh(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        kube.pods = [self.stuck_pod()]
        assert operator.reconcile() == "Pending"
        clock[0] = NOW + timedelta(seconds=50)
        kube.pods = [pod("Pending", state={"waiting": {"reason": "ContainerCreating"}})]
        operator.reconcile()
        kube.pods = [self.stuck_pod()]
        clock[0] = NOW + timedelta(seconds=70)
        assert operator.reconcile() == "Pending"
        assert kube.deleted_jobs == []

    def test_a_delete_the_api_server_refuses_is_told_and_tried_again(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        kube.pods = [self.stuck_pod()]
        operator.reconcile()

        def refuse(namespace: str, name: str, uid: str) -> None:
            raise RuntimeError("jobs.batch is forbidden: cannot delete")

        kube.delete_job = refuse  # type: ignore[method-assign]
        clock[0] = NOW + timedelta(seconds=60)
        assert operator.reconcile() == "Failed"
        assert operator.outcome == Outcome(retry_after=30.0)
        assert ("Warning", "StartupFailed") in kube.events
        operator.reconciler.events.flush()
        assert kube.jobs  # still there: the next pass tries again

    def test_a_job_still_there_after_the_outcome_is_deleted_again(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        kube.pods = [self.stuck_pod()]
        kube.delete_job = lambda namespace, name, uid: kube.deleted_jobs.append((name, uid))  # type: ignore[method-assign]
        operator.reconcile()
        clock[0] = NOW + timedelta(seconds=60)
        operator.reconcile()
        writes = len(kube.patches)
        assert operator.reconcile() == "Failed"
        assert len(kube.deleted_jobs) == 2 and len(kube.patches) == writes

    def test_a_pod_without_timestamps_is_timed_from_when_it_was_first_seen(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        kube.pods = [pod("Pending", state={"waiting": {"reason": "ErrImagePull"}})]
        assert operator.reconcile() == "Pending"
        clock[0] = NOW + timedelta(seconds=59)
        assert operator.reconcile() == "Pending"
        clock[0] = NOW + timedelta(seconds=60)
        assert operator.reconcile() == "Failed"
        assert kube.ftj["status"]["message"].startswith("spec.image is unset")

    def test_a_longer_deadline_set_while_waiting_is_honoured(self) -> None:
        kube = MemoryKube(body(self.SPEC))
        operator = reconciler(kube)
        operator.reconcile()
        kube.ftj["spec"]["lifecycle"]["startupDeadlineSeconds"] = 600
        kube.pods = [self.stuck_pod("2026-01-01T11:58:00Z")]
        assert operator.reconcile() == "Pending"
        assert kube.deleted_jobs == []

    def test_a_pod_waiting_for_a_deleted_config_map_is_held_to_the_deadline(self) -> None:
        spec = {**TestDatasetConfigMap.SPEC, "lifecycle": {"startupDeadlineSeconds": 60}}
        kube = MemoryKube(body(spec))
        kube.config_maps["chats"] = {"data": {"train.jsonl": "{}"}}
        clock = [NOW]
        operator = self.operator_at(kube, clock)
        operator.reconcile()
        del kube.config_maps["chats"]
        kube.pods = [_starting_pod()]
        assert operator.reconcile() == "Pending"
        assert kube.ftj["status"]["reason"] == "DatasetConfigMapMissing"
        clock[0] = NOW + timedelta(seconds=61)
        assert operator.reconcile() == "Failed"
        status = kube.ftj["status"]
        assert status["reason"] == "StartupFailed"
        assert status["message"].startswith(
            "spec.dataset.configMap.name: ConfigMap chats does not exist in namespace ml"
        )
        assert len(kube.deleted_jobs) == 1


class TestCheckpointOnStop:
    """The trainer writes a checkpoint when its pod is deleted (suspend, eviction) and names
    it in its termination message; the pod may be gone before any reconcile reads it."""

    URI = "pvc://outputs/ml/gpt-oss-ml/checkpoint-40"

    def stopped_pod(self, **kwargs: Any) -> dict[str, Any]:
        message = TerminationMessage(
            status="interrupted",
            reason="Interrupted",
            message="stopped on SIGTERM",
            step=40,
            checkpoint=CheckpointRef(step=40, uri=self.URI),
        ).encode()
        return pod("Failed", state=terminated(75, message), deleting=True, **kwargs)

    def suspended_after(self, gone: dict[str, Any]) -> MemoryKube:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile()  # creates the Job
        kube.pods = [running_pod()]
        operator.reconcile()
        kube.ftj["spec"]["lifecycle"] = {"suspend": True}
        kube.pods = [gone]
        operator.deliver()  # the watch saw it terminate ...
        kube.pods = []  # ... and be deleted, both before the next reconcile
        assert operator.reconcile() == "Suspended"
        return kube

    def test_the_checkpoint_written_on_suspend_is_recorded(self) -> None:
        kube = self.suspended_after(self.stopped_pod())
        assert kube.ftj["status"]["checkpoint"] == {"step": 40, "uri": self.URI}

    def test_a_pod_the_job_did_not_make_is_not_believed(self) -> None:
        kube = self.suspended_after(self.stopped_pod(controller_uid="someone-else"))
        assert "checkpoint" not in kube.ftj["status"]


def test_each_outcome_is_counted_once_for_alerts() -> None:
    """finetune_operator_finetunejobs_finished_total grows by one when a status turns
    Succeeded, and not again on later passes (nor for a FineTuneJob deleted afterwards)."""
    kube = MemoryKube(body())
    operator = reconciler(kube)
    operator.reconcile()  # creates the Job
    kube.pods = [running_pod()]
    assert operator.reconcile() == "Running"
    job = next(iter(kube.jobs.values()))
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.pods = [finished_pod("s3://bucket/p/final_model")]
    metrics = operator.reconciler.metrics
    counted = metrics.registry.get_sample_value
    labels = {"phase": "Succeeded"}
    assert counted("finetune_operator_finetunejobs_finished_total", labels) in (None, 0)
    assert operator.reconcile() == "Succeeded"
    assert operator.reconcile() == "Succeeded"
    assert counted("finetune_operator_finetunejobs_finished_total", labels) == 1
    assert counted("finetune_operator_finetunejobs_finished_total", {"phase": "Failed"}) in (
        None,
        0,
    )
