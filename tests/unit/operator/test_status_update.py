"""The next status and the Events announcing the change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from finetune_api.config import OutputSpec
from finetune_api.contract import (
    CheckpointRef,
    FinalModelRef,
    TerminationMessage,
    TrainerProgress,
)
from finetune_operator.observe import Observation
from finetune_operator.status_update import (
    failed_status,
    invalid_spec_status,
    kept_outcome,
    next_status,
    readable_status,
    status_rejected_status,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
OUTPUT = OutputSpec.model_validate({"pvc": {"claimName": "outs", "path": "ml/run"}})


def update(previous: dict, obs: Observation, progress: TrainerProgress | None = None):
    return next_status(
        previous,
        observation=obs,
        progress=progress,
        output=OUTPUT,
        job_name="job",
        generation=2,
        now=NOW,
    )


def test_running_with_live_progress_and_checkpoint() -> None:
    obs = Observation("Running", "Running", "training", start_time="T1", running_pod_uid="x")
    result = update({}, obs, TrainerProgress(step=12, total_steps=20, loss=1.7, checkpoint_step=10))
    status = result.patch
    assert status["phase"] == "Running" and status["observedGeneration"] == 2
    assert status["progress"]["summary"] == "12/20"
    assert status["checkpoint"] == {"step": 10, "uri": "pvc://outs/ml/run/checkpoint-10"}
    reasons = [e.reason for e in result.events]
    assert reasons == ["Running", "Checkpoint"]


def test_success_records_outputs_from_the_termination_message() -> None:
    summary = TerminationMessage(
        status="succeeded",
        reason="Completed",
        step=20,
        total_steps=20,
        loss=1.0,
        checkpoint=CheckpointRef(step=20, uri="pvc://outs/ml/run/checkpoint-20"),
        adapter_uri="pvc://outs/ml/run/final_model",
    )
    obs = Observation("Succeeded", "Succeeded", "done", completion_time="T9", termination=summary)
    previous = {"phase": "Running", "reason": "Running", "checkpoint": {"step": 10, "uri": "u"}}
    status = update(previous, obs).patch
    assert status["output"] == {"adapterUri": "pvc://outs/ml/run/final_model"}
    assert status["checkpoint"]["step"] == 20
    assert status["progress"]["step"] == 20 and status["progress"]["etaSeconds"] == 0
    assert status["completionTime"] == "T9"


def test_restart_count_never_goes_down_and_is_announced() -> None:
    obs = Observation("Running", "Running", "training", restarts=1)
    result = update({"phase": "Running", "reason": "Running", "restarts": 0}, obs)
    assert result.patch["restarts"] == 1
    assert [e.reason for e in result.events] == ["Restarted"]
    later = update(result.patch, Observation("Running", "Running", "training", restarts=0))
    assert later.patch["restarts"] == 1


def test_no_change_no_write() -> None:
    obs = Observation("Running", "Running", "training")
    first = update({}, obs).patch
    again = update(first, obs)
    assert not again.changed_from(first)
    assert again.events == []


def test_failure_is_a_warning() -> None:
    obs = Observation("Failed", "InvalidDataset", "row 3: ...")
    event = update({"phase": "Running", "reason": "Running"}, obs).events[0]
    assert (event.type, event.reason) == ("Warning", "InvalidDataset")


def test_invalid_spec() -> None:
    result = invalid_spec_status({}, ["spec.training.maxSteps: 0 is too small"], 1, NOW)
    assert result.patch["phase"] == "Failed"
    assert result.patch["reason"] == "InvalidSpec"
    assert "spec.training.maxSteps" in result.patch["message"]
    stalled = next(c for c in result.patch["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert [e.type for e in result.events] == ["Warning"]
    again = invalid_spec_status(result.patch, ["same"], 1, NOW)
    assert again.events == []


def test_failure_found_by_the_operator_names_its_reason_once() -> None:
    result = failed_status({"phase": "Pending"}, "JobRejected", "the API server rejected", 2, NOW)
    assert (result.patch["phase"], result.patch["reason"]) == ("Failed", "JobRejected")
    assert result.patch["observedGeneration"] == 2
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "JobRejected")]
    assert failed_status(result.patch, "JobRejected", "again", 2, NOW).events == []


def test_a_kept_outcome_still_acknowledges_a_later_generation() -> None:
    finished = failed_status({}, "JobDeleted", "gone", 1, NOW).patch
    kept = kept_outcome(finished, 3)
    assert kept.events == []
    assert (kept.patch["phase"], kept.patch["reason"]) == ("Failed", "JobDeleted")
    assert kept.patch["observedGeneration"] == 3
    assert {c["observedGeneration"] for c in kept.patch["conditions"]} == {3}
    assert {c["observedGeneration"] for c in finished["conditions"]} == {1}


def test_a_run_that_is_not_over_has_no_completion_time() -> None:
    # A stale completionTime (from an earlier status) is removed: null in the merge patch.
    previous = {"phase": "Failed", "reason": "StatusRejected", "completionTime": "T9"}
    for obs in (
        Observation("Running", "Running", "training"),
        Observation("Pending", "WaitingForPod", "waiting"),
        Observation("Suspended", "Suspended", "suspended"),
    ):
        result = update(previous, obs)
        assert "completionTime" in result.patch
        assert result.patch["completionTime"] is None
        assert result.changed_from(previous)
    # Where there was none, clearing it is no change.
    running = update({}, Observation("Running", "Running", "training")).patch
    assert not update(running, Observation("Running", "Running", "training")).changed_from(
        {k: v for k, v in running.items() if v is not None}
    )


@pytest.mark.parametrize("phase", ["Pending", "Running", "Suspended"])
def test_a_refused_status_is_no_outcome(phase: str) -> None:
    previous = {"phase": phase, "reason": "Running", "jobName": "job", "completionTime": "T9"}
    result = status_rejected_status(previous, "status.output.adapterUri: Too long", 2, NOW)
    status = result.patch
    assert (status["phase"], status["reason"]) == (phase, "StatusRejected")
    assert "status.output.adapterUri: Too long" in status["message"]
    assert "see Job job" in status["message"]
    assert status["completionTime"] is None
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Stalled"] == "True"
    assert conditions["Reconciling"] == "False"
    assert conditions["Suspended"] == ("True" if phase == "Suspended" else "False")
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "StatusRejected")]
    written = {k: v for k, v in {**previous, **status}.items() if v is not None}
    again = status_rejected_status(written, "status.output.adapterUri: Too long", 2, NOW)
    assert not again.changed_from(written) and again.events == []


def test_a_refused_status_keeps_an_outcome_already_recorded() -> None:
    previous = {"phase": "Succeeded", "reason": "Succeeded", "completionTime": "T9"}
    status = status_rejected_status(previous, "too long", 2, NOW).patch
    assert (status["phase"], status["completionTime"]) == ("Succeeded", "T9")


def test_a_refused_first_status_reads_pending() -> None:
    status = status_rejected_status({}, "too long", 1, NOW).patch
    assert status["phase"] == "Pending" and status["completionTime"] is None
    assert "see Job" not in status["message"]


@pytest.mark.parametrize(
    "recorded, vaguer",
    [
        (
            {"phase": "Failed", "reason": "InvalidDataset", "message": "dataset row 5: 'bot'"},
            Observation("Failed", "PodFailurePolicy", "Container trainer failed with exit 78"),
        ),
        (
            {"phase": "Succeeded", "reason": "Succeeded", "message": "adapter written to s3://b/a"},
            Observation("Succeeded", "Succeeded", "adapter written to the output location"),
        ),
    ],
)
def test_a_recorded_outcome_outlives_the_trainers_pods(recorded: dict, vaguer: Observation) -> None:
    # The Job's clean-up deletes its pods before the Job: a read in between sees the Job
    # finished but no termination message, and must not overwrite what the trainer said.
    previous = {**recorded, "observedGeneration": 2, "completionTime": "T9", "conditions": []}
    result = update(previous, vaguer)
    assert not result.changed_from(previous) and result.events == []
    # With the trainer's message in hand the status is computed afresh.
    told = update(previous, replace(vaguer, termination_text="exit 78: something else"))
    assert told.patch["reason"] == vaguer.reason


def running_on(pod_name: str, restarts: int = 0) -> Observation:
    return Observation("Running", "Running", "training", restarts=restarts, pod=pod_name)


def test_a_replaced_pod_is_a_restart_even_when_the_old_one_left_no_trace() -> None:
    # An evicted pod is deleted; the reconcile after its replacement starts sees only the
    # new pod, and the Job does not count the disruption as a failure.
    first = update({}, running_on("ftj-a")).patch
    assert (first["podName"], first["restarts"]) == ("ftj-a", 0)
    result = update(first, running_on("ftj-b"))
    assert (result.patch["podName"], result.patch["restarts"]) == ("ftj-b", 1)
    assert "Restarted" in [e.reason for e in result.events]
    # A failure the pods still show is the same restart, not a second one: counted while
    # the replacement is still pending, then again once it runs.
    pending = Observation("Pending", "ContainerCreating", "starting", restarts=1, pod="ftj-b")
    counted = update(first, pending).patch
    assert (counted["podName"], counted["restarts"]) == ("ftj-b", 1)
    assert update(counted, running_on("ftj-b", restarts=1)).patch["restarts"] == 1
    assert update(first, running_on("ftj-b", restarts=1)).patch["restarts"] == 1
    assert update(result.patch, running_on("ftj-b")).patch["restarts"] == 1


def test_resuming_after_a_suspend_is_no_restart() -> None:
    running = update({}, running_on("ftj-a")).patch
    suspended = update(running, Observation("Suspended", "Suspended", "suspended")).patch
    assert suspended["podName"] is None  # removed by the merge patch
    stored = {k: v for k, v in suspended.items() if v is not None}
    assert update(stored, running_on("ftj-b")).patch["restarts"] == 0


def test_a_refused_status_on_a_finished_run_is_replaced_without_the_trainers_message() -> None:
    # StatusRejected is not an outcome: even with the trainer's pods gone, the next status
    # the API server accepts replaces it.
    refused = status_rejected_status(
        {"phase": "Succeeded", "reason": "Succeeded", "completionTime": "T9"}, "too long", 2, NOW
    ).patch
    result = update(refused, Observation("Succeeded", "Succeeded", "adapter written"))
    assert result.patch["reason"] == "Succeeded"


def test_a_stored_status_is_read_less_what_the_model_refuses() -> None:
    good = {"type": "Ready", "status": "True", "reason": "R", "lastTransitionTime": "T0"}
    stored = {
        "phase": "Running",
        "reason": "Running",
        "restarts": "many",
        "conditions": [good, {"type": "Stalled"}, "Ready"],
        "progress": {"step": 3, "loss": "low"},
        "unknown": {"kept": True},
    }
    assert readable_status(stored) == {
        "phase": "Running",
        "reason": "Running",
        "conditions": [good],
        "unknown": {"kept": True},
    }
    assert readable_status({"phase": "Sleeping", "message": "x" * 100_000}) == {
        "message": "x" * 100_000  # as stored: only the status written is bounded
    }
    assert readable_status(None) == {} and readable_status(["Running"]) == {}


def test_the_patch_bounds_every_string_and_keeps_the_nulls_that_clear_a_field() -> None:
    long = "\x1b[31m" + "x" * 20_000
    obs = Observation("Suspended", long, long, start_time=long, pod=long)
    patch = update({}, obs).patch
    assert len(patch["message"]) == 4096 and patch["message"].startswith("\\x1b[31m")
    assert len(patch["reason"]) == len(patch["startTime"]) == 1024
    assert {len(c["message"]) for c in patch["conditions"]} == {4096}
    assert patch["podName"] is None and patch["completionTime"] is None
    assert "progress" not in patch and "checkpoint" not in patch


def test_the_attempt_is_numbered_by_the_restarts_the_status_counts() -> None:
    # Two evictions whose pods were gone before any reconcile: the pods show no failure,
    # the status counts each replaced pod, and the message numbers the third pod's attempt.
    first = update({}, running_on("ftj-a")).patch
    second = update(first, running_on("ftj-b")).patch
    third = update(second, running_on("ftj-c")).patch
    assert third["restarts"] == 2
    assert third["message"] == "training (attempt 3, after a restart)"
    failed_before = replace(running_on("ftj-d", restarts=1), last_failure="exit code 1 (Error)")
    fourth = update(third, failed_before).patch
    assert fourth["message"] == "training (attempt 4, after exit code 1 (Error))"
    assert update({}, running_on("ftj-a")).patch["message"] == "training"


def test_the_mlflow_run_id_is_reported_in_status_tracking() -> None:
    summary = TerminationMessage(
        status="succeeded",
        reason="Completed",
        adapter_uri="pvc://outs/ml/run/final_model",
        mlflow_run_id="0123456789abcdef0123456789abcdef",
    )
    obs = Observation("Succeeded", "Succeeded", "done", completion_time="T9", termination=summary)
    status = update({"phase": "Running", "reason": "Running"}, obs).patch
    assert status["tracking"] == {"mlflowRunId": "0123456789abcdef0123456789abcdef"}
    untracked = summary.model_copy(update={"mlflow_run_id": None})
    obs = replace(obs, termination=untracked)
    assert "tracking" not in update({"phase": "Running", "reason": "Running"}, obs).patch


def test_success_says_which_step_final_model_holds_and_the_last_eval_loss() -> None:
    summary = TerminationMessage(
        status="succeeded",
        reason="Completed",
        step=30,
        total_steps=100,
        loss=1.0,
        eval_loss=1.25,
        adapter_uri="pvc://outs/ml/run/final_model",
        final_model=FinalModelRef(step=20, selection="best eval loss 1.234 at step 20"),
        early_stop="stopped early at step 30: the eval loss did not improve by more than 0 "
        "for 2 evaluations",
    )
    obs = Observation("Succeeded", "Succeeded", "done", completion_time="T9", termination=summary)
    status = update({"phase": "Running", "reason": "Running"}, obs).patch
    assert status["output"] == {
        "adapterUri": "pvc://outs/ml/run/final_model",
        "finalModelStep": 20,
        "finalModelSelection": "best eval loss 1.234 at step 20",
    }
    assert status["progress"]["evalLoss"] == 1.25
    assert status["progress"]["evalLossDisplay"] == "1.25"
