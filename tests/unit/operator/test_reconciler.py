"""Reconcile against an in-memory API: what the operator writes when the API server
refuses a status, a spec has no durable output, a child's name is taken, or the dataset's
ConfigMap is missing."""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from finetune_operator.api.spec import DURABLE_OUTPUT_MESSAGE, RECREATE_FOR_OUTPUT, FineTuneJobSpec
from finetune_operator.api.status import MAX_URI, FineTuneJobStatus
from finetune_operator.builders import Owner, build_job
from finetune_operator.config import OperatorConfig
from finetune_operator.kube import ChildConflict, ChildDeferred, ChildRejected, Kube, StatusRejected
from finetune_operator.reconciler import Reconciler
from finetune_trainer.contract import TrainerProgress

from .conftest import JOB_UID, body, pod, terminated

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


class MemoryKube:
    """The calls the reconciler makes, on dicts; ``status_limit`` stands in for the CRD's
    status schema: a status with a longer string is refused as the API server would."""

    def __init__(self, ftj: dict[str, Any], status_limit: int | None = None) -> None:
        self.ftj = ftj
        self.status_limit = status_limit
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.patches: list[dict[str, Any]] = []
        self.rejected = 0
        self.events: list[tuple[str, str]] = []
        self.conflict_on_create = False
        self.quota_used_up = False
        self.config_maps: dict[str, dict[str, Any]] = {}

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.ftj)

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
            raise ChildConflict(
                f"{obj['kind']} {meta['namespace']}/{meta['name']} already exists and is not "
                "owned by this FineTuneJob; delete it or rename the FineTuneJob"
            )
        if obj["kind"] == "Job":
            obj = {**obj, "metadata": {**meta, "uid": JOB_UID}, "status": {}}
            self.jobs[meta["name"]] = obj
        return obj, True

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.config_maps.get(name))

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.jobs[name]["spec"].update(patch["spec"])

    def list_trainer_pods(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def patch_status(self, ftj: dict[str, Any], status: dict[str, Any]) -> bool:
        if self.status_limit is not None and _longest_string(status) > self.status_limit:
            self.rejected += 1
            raise StatusRejected("status.output.adapterUri: Too long: may not be more than 1024")
        self.patches.append(status)
        self.ftj["status"] = merge_patch(self.ftj.get("status") or {}, status)
        return True

    def post_event(self, ftj: dict[str, Any], kind: str, reason: str, message: str, now: str):
        self.events.append((kind, reason))


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


def reconciler(kube: MemoryKube) -> Reconciler:
    return Reconciler(kube, OperatorConfig(), clock=lambda: NOW)  # type: ignore[arg-type]


def finished_pod(adapter_uri: str) -> dict[str, Any]:
    message = json.dumps({"status": "succeeded", "reason": "Completed", "adapterUri": adapter_uri})
    return pod("Succeeded", state=terminated(0, message, reason="Completed"))


def running_pod() -> dict[str, Any]:
    return pod("Running", state={"running": {}}, ip="10.0.0.7")


def condition(status: dict[str, Any], kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


class TestRefusedStatus:
    def completed(self, kube: MemoryKube, adapter_uri: str) -> None:
        reconciler(kube).reconcile("ml", "gpt-oss-ml")  # creates the Job
        job = next(iter(kube.jobs.values()))
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        kube.pods = [finished_pod(adapter_uri)]

    def running_then_refused(self, kube: MemoryKube) -> Reconciler:
        """The Job runs and is reported Running; then a status is refused (a too-long
        adapter URI in the outcome) while the Job is still there."""
        operator = reconciler(kube)
        operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
        kube.pods = [running_pod()]
        assert operator.reconcile("ml", "gpt-oss-ml") == "Running"
        job = next(iter(kube.jobs.values()))
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        kube.pods = [finished_pod("s3://bucket/" + "p" * 1100 + "/final_model")]
        kube.status_limit = 1024
        return operator

    def test_is_reported_once_instead_of_failing_every_reconcile(self) -> None:
        kube = MemoryKube(body())
        operator = self.running_then_refused(kube)
        # Not an outcome: the phase stays what it was.
        assert operator.reconcile("ml", "gpt-oss-ml") == "Running"
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
        assert operator.reconcile("ml", "gpt-oss-ml") == "Running"
        assert len(kube.patches) == writes

    def test_keeps_the_job_and_the_poller_following_it(self) -> None:
        kube = MemoryKube(body({"lifecycle": {"ttlSecondsAfterFinished": 0}}))
        operator = self.running_then_refused(kube)
        operator.reconcile("ml", "gpt-oss-ml")
        assert kube.ftj["status"]["reason"] == "StatusRejected"
        assert operator.unfinished() == [("ml", "gpt-oss-ml")]
        operator.reconcile("ml", "gpt-oss-ml", poll_metrics=True)
        # No outcome is recorded, so nothing may clean the Job up yet.
        job = next(iter(kube.jobs.values()))
        assert job["spec"].get("ttlSecondsAfterFinished") is None

    def test_a_later_accepted_status_replaces_it(self) -> None:
        kube = MemoryKube(body({"lifecycle": {"ttlSecondsAfterFinished": 60}}))
        operator = self.running_then_refused(kube)
        operator.reconcile("ml", "gpt-oss-ml")
        assert kube.ftj["status"]["reason"] == "StatusRejected"
        kube.status_limit = None  # e.g. a CRD that allows the longer value is installed
        assert operator.reconcile("ml", "gpt-oss-ml") == "Succeeded"
        status = kube.ftj["status"]
        assert status["reason"] == "Succeeded"
        assert status["output"]["adapterUri"].endswith("/final_model")
        assert condition(status, "Stalled") == "False"
        assert condition(status, "Ready") == "True"
        assert kube.events[-1] == ("Normal", "Succeeded")
        assert operator.unfinished() == []
        # Now that the outcome is recorded, the Job may be cleaned up.
        operator.reconcile("ml", "gpt-oss-ml")
        assert next(iter(kube.jobs.values()))["spec"]["ttlSecondsAfterFinished"] == 60

    def test_every_uri_the_spec_allows_fits_the_status(self) -> None:
        # The longest S3 output prefix, plus the checkpoint directory the trainer adds.
        uri = "s3://bucket/" + "p" * (1024 - len("s3://bucket/")) + "/checkpoint-10000000"
        kube = MemoryKube(body({"output": {"s3": {"uri": "s3://bucket/p"}}}))
        self.completed(kube, uri)
        assert reconciler(kube).reconcile("ml", "gpt-oss-ml") == "Succeeded"
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
        assert reconciler(kube).reconcile("ml", "gpt-oss-ml") == "Failed"
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
        assert operator.reconcile("ml", "gpt-oss-ml") == "Running"
        status = kube.ftj["status"]
        assert status["reason"] == "Running"
        assert condition(status, "Stalled") == "False"
        assert list(kube.jobs) == [owner.child_name]
        assert operator.unfinished() == [("ml", "gpt-oss-ml")]


def test_a_child_name_held_by_another_object_is_its_own_reason() -> None:
    kube = MemoryKube(body())
    kube.conflict_on_create = True
    assert reconciler(kube).reconcile("ml", "gpt-oss-ml") == "Failed"
    status = kube.ftj["status"]
    assert status["reason"] == "ChildConflict"
    assert "already exists and is not owned by this FineTuneJob" in status["message"]
    assert "delete it or rename the FineTuneJob" in status["message"]
    assert "invalid spec" not in status["message"]
    assert kube.events == [("Warning", "ChildConflict")]


def test_a_used_up_quota_waits_and_the_job_follows_once_it_allows() -> None:
    kube = MemoryKube(body())
    kube.quota_used_up = True
    operator = reconciler(kube)
    assert operator.reconcile("ml", "gpt-oss-ml") == "Pending"
    status = kube.ftj["status"]
    assert status["reason"] == "QuotaExceeded"
    assert "exceeded quota: jobs" in status["message"]
    assert "created once the quota allows it" in status["message"]
    # It clears by itself, as a pod waiting for a GPU does: progressing, not stalled.
    assert condition(status, "Stalled") == "False" and condition(status, "Reconciling") == "True"
    assert status.get("completionTime") is None
    assert operator.unfinished() == [("ml", "gpt-oss-ml")]  # the poller tries again
    operator.reconcile("ml", "gpt-oss-ml")
    assert kube.events == [("Warning", "QuotaExceeded")]  # announced once
    kube.quota_used_up = False
    operator.reconcile("ml", "gpt-oss-ml", poll_metrics=True)
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
    kube.batch = _Jobs(403, message)  # type: ignore[assignment]
    job = {"kind": "Job", "metadata": {"namespace": "ml", "name": "j"}}
    with pytest.raises(raised, match="is forbidden"):
        kube.ensure(job, "uid")


class _CustomObjects:
    def __init__(self, status: int) -> None:
        self.status = status

    def patch_namespaced_custom_object_status(self, *args: Any) -> None:
        exc = ApiException(status=self.status, reason="Unprocessable Entity")
        exc.body = json.dumps({"message": "status.checkpoint.uri: Too long"})
        raise exc


@pytest.mark.parametrize("code, outcome", [(409, False), (404, False)])
def test_status_conflicts_are_retried(code: int, outcome: bool) -> None:
    kube = Kube.__new__(Kube)
    kube.custom = _CustomObjects(code)  # type: ignore[assignment]
    assert kube.patch_status(body(), {"phase": "Running"}) is outcome


def test_a_status_the_api_server_refuses_is_raised_with_its_message() -> None:
    kube = Kube.__new__(Kube)
    kube.custom = _CustomObjects(422)  # type: ignore[assignment]
    with pytest.raises(StatusRejected, match=r"status\.checkpoint\.uri: Too long"):
        kube.patch_status(body(), {"phase": "Running"})


class TestDatasetConfigMap:
    SPEC = {"dataset": {"configMap": {"name": "chats", "key": "train.jsonl"}}}

    def status_while_starting(self, kube: MemoryKube) -> dict[str, Any]:
        operator = reconciler(kube)
        operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
        kube.pods = [_starting_pod()]
        operator.reconcile("ml", "gpt-oss-ml")
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
    operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
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
    assert operator.reconcile("ml", "gpt-oss-ml") == "Failed"
    assert kube.ftj["status"]["reason"] == "InvalidDataset"
    operator.reconcile("ml", "gpt-oss-ml")  # the outcome is recorded: the TTL goes on
    assert job["spec"]["ttlSecondsAfterFinished"] == 0
    kube.pods = []  # deleted by the clean-up, the Job not yet
    writes = len(kube.patches)
    assert operator.reconcile("ml", "gpt-oss-ml") == "Failed"
    status = kube.ftj["status"]
    assert (status["reason"], status["message"]) == ("InvalidDataset", "dataset row 5: 'bot'")
    assert len(kube.patches) == writes
    assert kube.events[-1] == ("Warning", "InvalidDataset")  # announced once, not undone


def test_a_stopped_run_is_not_rewritten_on_every_reconcile() -> None:
    kube = MemoryKube(body())
    live = TrainerProgress(
        step=12, total_steps=20, loss=1.7, epoch=0.05, learning_rate=1e-4, tokens_per_second=7800
    )
    operator = Reconciler(
        kube,  # type: ignore[arg-type]
        OperatorConfig(),
        clock=lambda: NOW,
        scraper=lambda ip, timeout: live,
    )
    operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
    kube.pods = [running_pod()]
    operator.reconcile("ml", "gpt-oss-ml", poll_metrics=True)
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
    operator.reconcile("ml", "gpt-oss-ml", poll_metrics=True)
    writes = len(kube.patches)
    for _ in range(3):
        operator.reconcile("ml", "gpt-oss-ml", poll_metrics=True)
    assert len(kube.patches) == writes
    assert kube.ftj["status"]["progress"]["step"] == 12


class TestBookkeeping:
    """What the reconciler keeps per FineTuneJob: the poller's list, the phase gauge and
    a lock, each in step with the FineTuneJobs that exist."""

    def test_a_status_that_keeps_conflicting_leaves_the_run_polled(self) -> None:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile("ml", "gpt-oss-ml")
        kube.pods = [running_pod()]
        kube.patch_status = lambda ftj, status: False  # type: ignore[method-assign]
        assert operator.reconcile("ml", "gpt-oss-ml") == "Pending"  # what the status holds
        assert operator.unfinished() == [("ml", "gpt-oss-ml")]

    def test_events_after_a_deletion_leave_nothing_behind(self) -> None:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile("ml", "gpt-oss-ml")
        operator.forget("ml", "gpt-oss-ml")  # the DELETED event
        kube.ftj = None  # type: ignore[assignment]
        # Garbage collection of its Job and pods triggers more reconciles.
        assert operator.reconcile("ml", "gpt-oss-ml") is None
        assert len(operator._locks) == 0  # one lock per deleted FineTuneJob would pile up
        assert operator.unfinished() == []

    def test_a_deletion_during_a_reconcile_is_not_counted_again(self) -> None:
        kube = MemoryKube(body())
        operator = reconciler(kube)
        operator.reconcile("ml", "gpt-oss-ml")
        reading, go_on = threading.Event(), threading.Event()
        read = kube.get_finetunejob

        def slow_read(namespace: str, name: str) -> dict[str, Any] | None:
            reading.set()
            go_on.wait(5)
            return read(namespace, name)

        kube.get_finetunejob = slow_read  # type: ignore[method-assign]
        under_way = threading.Thread(target=operator.reconcile, args=("ml", "gpt-oss-ml"))
        under_way.start()
        assert reading.wait(5)
        deleted = threading.Thread(target=operator.forget, args=("ml", "gpt-oss-ml"))
        deleted.start()
        deleted.join(0.3)
        assert deleted.is_alive()  # the DELETED event waits for the reconcile under way
        go_on.set()
        under_way.join(5)
        deleted.join(5)
        gauge = operator.metrics.registry.get_sample_value
        assert gauge("finetune_operator_finetunejobs", {"phase": "Pending"}) == 0
        assert operator.unfinished() == []


@pytest.mark.parametrize("old_pod_stays_listed", [True, False])
def test_a_replaced_trainer_is_one_restart(old_pod_stays_listed: bool) -> None:
    # A fails (or is evicted, its pod deleted), B waits to be scheduled, then runs: one
    # restart and one Restarted Event, whichever of these states the reconciles catch.
    kube = MemoryKube(body())
    operator = reconciler(kube)
    operator.reconcile("ml", "gpt-oss-ml")  # creates the Job
    kube.pods = [pod("Running", name="a", created="T1", state={"running": {}})]
    operator.reconcile("ml", "gpt-oss-ml")
    failed_a = pod("Failed", name="a", created="T1", state=terminated(1, "Traceback"))
    kube.pods = [failed_a]
    operator.reconcile("ml", "gpt-oss-ml")
    pending_b = pod("Pending", name="b", created="T3")
    kube.pods = [failed_a, pending_b] if old_pod_stays_listed else [pending_b]
    operator.reconcile("ml", "gpt-oss-ml")
    running_b = pod("Running", name="b", created="T3", state={"running": {}})
    kube.pods = [failed_a, running_b] if old_pod_stays_listed else [running_b]
    operator.reconcile("ml", "gpt-oss-ml")
    status = kube.ftj["status"]
    assert (status["restarts"], status["podName"]) == (1, "b")
    assert [e for e in kube.events if e[1] == "Restarted"] == [("Warning", "Restarted")]
