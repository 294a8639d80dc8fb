"""From a Job and its pods to the phase, reason and message a user sees."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from finetune_api.config import OutputSpec
from finetune_api.contract import (
    TERMINATION_MESSAGE_LIMIT,
    CheckpointRef,
    FinalModelRef,
    TerminationMessage,
)
from finetune_operator.observe import _NUMBERS, observe
from finetune_operator.status_update import next_status

from .conftest import JOB_UID, pod, terminated


def job(conditions: list[dict] | None = None, suspend: bool = False, **status: Any) -> dict:
    return {
        "metadata": {"name": "j", "namespace": "ml", "uid": JOB_UID},
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], **status},
    }


def cond(kind: str, reason: str = "", message: str = "", at: str = "T9") -> dict:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": at,
    }


SUCCESS = TerminationMessage(
    status="succeeded",
    reason="Completed",
    step=20,
    total_steps=20,
    loss=1.1,
    checkpoint=CheckpointRef(step=20, uri="pvc://o/p/checkpoint-20"),
    adapter_uri="pvc://o/p/final_model",
).encode()


class TestPhases:
    def test_no_job_yet(self) -> None:
        assert observe(None, []).reason == "CreatingJob"

    def test_running_pod_reports_running_and_whose_metrics_count(self) -> None:
        seen = observe(
            job(active=1, startTime="T1"),
            [pod("Running", state={"running": {"startedAt": "T2"}}, ip="10.0.0.7")],
        )
        assert (seen.phase, seen.running_pod_uid, seen.start_time) == ("Running", "uid-p1", "T1")

    def test_succeeded_reads_the_termination_message(self) -> None:
        seen = observe(
            job([cond("Complete")], completionTime="T8"),
            [pod("Succeeded", state=terminated(0, SUCCESS, reason="Completed"))],
        )
        assert seen.phase == "Succeeded"
        assert seen.completion_time == "T8"
        assert seen.termination is not None and seen.termination.adapter_uri.endswith("final_model")
        assert "final_model" in seen.message

    def test_success_says_why_training_stopped_early_and_what_final_model_holds(self) -> None:
        evaluated = TerminationMessage.decode(SUCCESS)
        assert evaluated is not None
        text = evaluated.model_copy(
            update={
                "eval_loss": 1.3,
                "early_stop": "stopped early at step 8: the eval loss did not improve by "
                "more than 0 for 2 evaluations",
                "final_model": FinalModelRef(step=4, selection="best eval loss 1.234 at step 4"),
            }
        ).encode()
        seen = observe(
            job([cond("Complete")], completionTime="T8"),
            [pod("Succeeded", state=terminated(0, text, reason="Completed"))],
        )
        assert seen.message == (
            "training finished; adapter written to pvc://o/p/final_model; stopped early at "
            "step 8: the eval loss did not improve by more than 0 for 2 evaluations; "
            "final_model: best eval loss 1.234 at step 4"
        )

    def test_invalid_input_fails_with_the_trainers_reason(self) -> None:
        message = TerminationMessage(
            status="invalid_input",
            reason="InvalidDataset",
            message="row 7: unknown role 'bot'; fix: use system, user or assistant",
        ).encode()
        seen = observe(
            job([cond("Failed", "PodFailurePolicy")], failed=1),
            [pod("Failed", state=terminated(78, message))],
        )
        assert (seen.phase, seen.reason) == ("Failed", "InvalidDataset")
        assert "row 7" in seen.message

    def test_a_diverged_run_fails_diverged_keeping_its_checkpoint_without_a_retry(self) -> None:
        # The trainer writes the non-finite loss as null: JSON has no NaN.
        message = TerminationMessage(
            status="invalid_input",
            reason="Diverged",
            message="training diverged at step 7: the training loss is nan; no checkpoint of "
            "this step was written. To fix: lower training.learningRate (now 0.5), ...",
            step=7,
            total_steps=20,
            loss=float("nan"),
            checkpoint=CheckpointRef(step=6, uri="pvc://outs/ml/run/checkpoint-6"),
        ).encode()
        assert '"loss":null' in message
        seen = observe(job(), [pod("Failed", state=terminated(78, message, at="T6"))])
        assert (seen.phase, seen.reason, seen.restarts) == ("Failed", "Diverged", 0)
        assert seen.message.startswith("training diverged at step 7: the training loss is nan")
        output = OutputSpec.model_validate({"pvc": {"claimName": "outs"}})
        now = datetime(2026, 1, 1, tzinfo=UTC)
        status = next_status(
            {}, observation=seen, progress=None, output=output, job_name="j", generation=1, now=now
        ).patch
        assert (status["phase"], status["reason"]) == ("Failed", "Diverged")
        assert status["checkpoint"] == {"step": 6, "uri": "pvc://outs/ml/run/checkpoint-6"}
        assert status["progress"]["step"] == 7 and "loss" not in status["progress"]
        json.dumps(status, allow_nan=False)

    def test_backoff_exceeded_names_the_last_failure(self) -> None:
        seen = observe(
            job([cond("Failed", "BackoffLimitExceeded")], failed=4),
            [pod("Failed", state=terminated(137, reason="OOMKilled"))],
        )
        assert seen.reason == "BackoffLimitExceeded"
        assert "OOMKilled" in seen.message
        assert seen.restarts == 3  # four attempts: the last failure was not retried

    def test_deadline(self) -> None:
        seen = observe(job([cond("Failed", "DeadlineExceeded")]), [])
        assert seen.reason == "DeadlineExceeded"
        assert "activeDeadlineSeconds" in seen.message

    def test_failure_target_is_the_outcome_before_the_pods_are_gone(self) -> None:
        # Past its deadline the trainer is still saving a checkpoint (its pod is being
        # deleted); the Job has FailureTarget, and Failed only once the pod is gone.
        stopping = pod("Running", state={"running": {"startedAt": "T2"}}, deleting=True)
        seen = observe(job([cond("FailureTarget", "DeadlineExceeded", at="T7")]), [stopping])
        assert (seen.phase, seen.reason, seen.completion_time) == (
            "Failed",
            "DeadlineExceeded",
            "T7",
        )
        both = [cond("FailureTarget", "DeadlineExceeded", at="T7"), cond("Failed", "X", at="T8")]
        assert observe(job(both), []).completion_time == "T8"

    def test_bad_input_fails_before_the_job_says_so(self) -> None:
        # The pod's update triggers a reconcile before the Job controller applies the
        # podFailurePolicy: exit 78 is never retried, so it is not reported as a restart.
        message = TerminationMessage(
            status="invalid_input", reason="InvalidDataset", message="row 7: role 'bot'"
        ).encode()
        seen = observe(job(), [pod("Failed", state=terminated(78, message, at="T6"))])
        assert (seen.phase, seen.reason, seen.message) == (
            "Failed",
            "InvalidDataset",
            "row 7: role 'bot'",
        )
        assert (seen.completion_time, seen.restarts) == ("T6", 0)

    def test_another_failure_waits_for_the_job_to_retry(self) -> None:
        seen = observe(job(), [pod("Failed", state=terminated(1, "Traceback ... CUDA error"))])
        assert (seen.phase, seen.reason) == ("Pending", "Restarting")
        assert "while spec.lifecycle.backoffLimit allows" in seen.message

    def test_crash_without_message_uses_the_log_tail(self) -> None:
        seen = observe(
            job([cond("Failed", "BackoffLimitExceeded")], failed=1),
            [pod("Failed", state=terminated(1, "Traceback ... CUDA error"))],
        )
        assert "CUDA error" in seen.message


class TestPending:
    @pytest.mark.parametrize(
        "the_pod, reason, fragment",
        [
            (
                pod(
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                        }
                    ]
                ),
                "Unschedulable",
                "Insufficient nvidia.com/gpu",
            ),
            (
                pod(
                    state={
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": "Back-off pulling image",
                        }
                    },
                    conditions=[{"type": "PodScheduled", "status": "True"}],
                ),
                "ImagePullBackOff",
                "Back-off",
            ),
            (
                pod(
                    state={
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "hf-token" not found',
                        }
                    },
                    conditions=[{"type": "PodScheduled", "status": "True"}],
                ),
                "CreateContainerConfigError",
                "hf-token",
            ),
            (
                pod(
                    state={"waiting": {"reason": "ContainerCreating"}},
                    conditions=[{"type": "PodScheduled", "status": "True"}],
                ),
                "ContainerCreating",
                "starting",
            ),
        ],
    )
    def test_why_the_pod_is_not_running(self, the_pod, reason, fragment) -> None:
        seen = observe(job(active=1), [the_pod])
        assert (seen.phase, seen.reason) == ("Pending", reason)
        assert fragment in seen.message

    def test_between_attempts_after_a_failure(self) -> None:
        seen = observe(job(failed=1), [pod("Failed", state=terminated(137, reason="OOMKilled"))])
        # Not a restart until the next attempt exists: this failure may yet be the last.
        assert (seen.phase, seen.reason, seen.restarts) == ("Pending", "Restarting", 0)
        assert "OOMKilled" in seen.message

    def test_a_failure_that_fails_the_job_is_not_a_restart(self) -> None:
        failed = pod("Failed", state=terminated(78))
        assert observe(job(failed=1), [failed]).restarts == 0  # before the Job reacts
        assert observe(job([cond("Failed", "PodFailurePolicy")], failed=1), [failed]).restarts == 0

    def test_a_disruption_counts_once_replaced(self) -> None:
        # The Job ignores it (podFailurePolicy) and always replaces the pod; counted once
        # the replacement exists, like any failure, so that the status, which also counts
        # a change of pod, never counts it twice.
        disrupted = pod(
            "Failed",
            name="old",
            created="T1",
            state=terminated(75),
            conditions=[cond("DisruptionTarget", "Preempted")],
        )
        alone = observe(job(), [disrupted])
        assert (alone.restarts, alone.pod) == (0, "old")
        replacement = pod("Pending", name="new", created="T3")
        both = observe(job(active=1), [disrupted, replacement])
        assert (both.restarts, both.pod) == (1, "new")

    def test_a_disrupted_pod_with_a_bad_input_message_is_retried(self) -> None:
        # Evicted while exiting: the podFailurePolicy ignores disruptions before it looks
        # at exit codes, so the Job retries it.
        message = TerminationMessage(
            status="invalid_input", reason="InvalidDataset", message="row 7"
        ).encode()
        evicted = pod(
            "Failed",
            state=terminated(78, message),
            conditions=[cond("DisruptionTarget", "EvictionByEvictionAPI")],
        )
        assert observe(job(), [evicted]).phase == "Pending"
        killed = pod("Failed", state=terminated(137, message, reason="OOMKilled"))
        assert observe(job(), [killed]).reason == "Restarting"

    def test_finished_trainer_before_the_job_completes(self) -> None:
        seen = observe(job(succeeded=1), [pod("Succeeded", state=terminated(0, SUCCESS))])
        assert (seen.phase, seen.reason) == ("Running", "Completing")

    def test_the_newest_pod_wins(self) -> None:
        old = pod("Failed", name="old", created="T1", state=terminated(1))
        new = pod("Running", name="new", created="T3", state={"running": {}}, ip="10.0.0.9")
        seen = observe(job(active=1, failed=1), [old, new])
        assert (seen.phase, seen.pod, seen.restarts) == ("Running", "new", 1)
        assert seen.last_failure == "exit code 1 (Error)"

    def test_a_disruption_is_not_reported_as_a_failure_against_the_backoff_limit(self) -> None:
        # An evicted trainer honours SIGTERM with exit 75; the Job ignores the failure.
        evicted = pod(
            "Failed",
            state=terminated(75),
            conditions=[cond("DisruptionTarget", "EvictionByEvictionAPI")],
        )
        seen = observe(job(), [evicted])
        assert seen.reason == "Restarting"
        assert seen.message == (
            "the trainer pod was disrupted (EvictionByEvictionAPI); the Job starts another "
            "attempt from the newest checkpoint (disruptions do not count against "
            "spec.lifecycle.backoffLimit)"
        )
        assert "exit code 75" not in seen.message
        assert seen.last_failure == (
            "a disruption (EvictionByEvictionAPI; not counted against spec.lifecycle.backoffLimit)"
        )


class TestSuspend:
    @pytest.mark.parametrize("deleting", [False, True])
    def test_suspending_while_the_trainer_checkpoints(self, deleting: bool) -> None:
        # The Job controller deletes the pod at once; the trainer saves through the grace
        # period, so a pod being deleted is still stopping.
        trainer = pod("Running", state={"running": {}}, deleting=deleting)
        seen = observe(job(suspend=True), [trainer])
        assert (seen.phase, seen.reason) == ("Suspended", "Suspended")
        assert seen.message.startswith("suspending: the trainer is writing a checkpoint")

    def test_suspended(self) -> None:
        seen = observe(job(suspend=True, startTime="T1"), [])
        assert "resume" in seen.message

    def test_waiting_for_kueue(self) -> None:
        seen = observe(job(suspend=True), [], queued=True)
        assert seen.reason == "WaitingForQueue"


class TestOnlyTheJobsOwnPods:
    """Pods are found by the FineTuneJob's labels, which anyone who can create pods in the
    namespace can copy; only pods the Job controller made for this Job may speak for it."""

    SPOOFED = TerminationMessage(
        status="succeeded",
        reason="Completed",
        step=20,
        total_steps=20,
        adapter_uri="s3://attacker/adapter",
    ).encode()

    @pytest.mark.parametrize("controller_uid", [None, "another-job-uid"])
    def test_a_lookalike_pod_is_ignored(self, controller_uid: str | None) -> None:
        impostor = pod(
            "Succeeded",
            name="impostor",
            state=terminated(0, self.SPOOFED, reason="Completed"),
            controller_uid=controller_uid,
        )
        seen = observe(job(conditions=[cond("Complete")]), [impostor])
        assert seen.termination is None
        assert "s3://attacker" not in seen.message

    def test_a_lookalike_running_pod_is_never_scraped(self) -> None:
        impostor = pod(
            "Running", state={"running": {}}, ip="10.0.0.66", controller_uid="another-job-uid"
        )
        seen = observe(job(active=1), [impostor])
        assert seen.running_pod_uid is None
        assert seen.phase == "Pending"

    def test_the_jobs_own_pod_is_read(self) -> None:
        own = pod("Succeeded", state=terminated(0, SUCCESS, reason="Completed"))
        seen = observe(job(conditions=[cond("Complete")]), [own])
        assert seen.termination is not None
        assert seen.termination.adapter_uri == "pvc://o/p/final_model"


class TestATerminationMessageFromAnyImage:
    """The image writes its termination message; no number in it may make the status one
    the API server refuses (NaN is no JSON, a step past int64 no integer it stores)."""

    @staticmethod
    def finished(text: str) -> Any:
        return observe(
            job([cond("Complete")], completionTime="T8"),
            [pod("Succeeded", state=terminated(0, text, reason="Completed"))],
        )

    @staticmethod
    def status_of(seen: Any) -> dict[str, Any]:
        output = OutputSpec.model_validate({"pvc": {"claimName": "outs"}})
        now = datetime(2026, 1, 1, tzinfo=UTC)
        update = next_status(
            {}, observation=seen, progress=None, output=output, job_name="j", generation=1, now=now
        )
        return update.patch

    @pytest.mark.parametrize(
        "numbers",
        [
            '"step": NaN, "totalSteps": Infinity, "loss": NaN',
            '"step": 5, "totalSteps": 10, "loss": -Infinity',
            '"step": 99999999999999999999999999, "totalSteps": -99999999999999999999999999',
            '"step": 9223372036854775808, "loss": 1e300',
            '"step": 5, "loss": 1e400',
            '"resumedFromStep": 1e300, "step": 5',
            '"step": 5, "checkpoint": {"step": 99999999999999999999, "uri": "s3://b/c"}',
            '"step": 5, "checkpoint": {"step": NaN, "uri": "s3://b/c"}',
        ],
    )
    def test_no_number_past_what_a_run_reports_reaches_the_status(self, numbers: str) -> None:
        text = '{"status": "succeeded", "reason": "Completed", "message": "done", ' + numbers
        seen = self.finished(text + "}")
        if seen.termination is not None:
            assert seen.termination.message == "done"  # the rest of the message is kept
            for name in _NUMBERS:
                value = getattr(seen.termination, name)
                assert value is None or abs(value) <= 2**53
            checkpoint = seen.termination.checkpoint
            assert checkpoint is None or checkpoint.step <= 2**53
        status = self.status_of(seen)
        text_of_status = json.dumps(status, allow_nan=False)  # no NaN, no infinity

        def integers(value: Any) -> list[int]:
            if isinstance(value, dict):
                return [n for v in value.values() for n in integers(v)]
            if isinstance(value, list):
                return [n for v in value for n in integers(v)]
            return [value] if isinstance(value, int) and not isinstance(value, bool) else []

        assert all(-(2**63) <= n < 2**63 for n in integers(status)), text_of_status

    def test_sane_numbers_are_kept(self) -> None:
        text = (
            '{"status": "succeeded", "reason": "Completed", "step": 20, "totalSteps": 20, '
            '"loss": -0.5, "resumedFromStep": 10, "checkpoint": {"step": 20, "uri": "s3://b/c"}}'
        )
        summary = self.finished(text).termination
        assert summary is not None
        assert (summary.step, summary.total_steps, summary.loss) == (20, 20, -0.5)
        assert summary.resumed_from_step == 10
        assert summary.checkpoint == CheckpointRef(step=20, uri="s3://b/c")

    def test_every_number_of_the_message_is_bounded(self) -> None:
        def numeric(annotation: Any) -> bool:
            return bool({int, float} & set(typing.get_args(annotation) or (annotation,)))

        fields = TerminationMessage.model_fields
        assert {name for name, f in fields.items() if numeric(f.annotation)} == set(_NUMBERS)
        # The checkpoint's step is bounded on its own (a checkpoint without one is dropped).
        assert {
            name for name, f in CheckpointRef.model_fields.items() if numeric(f.annotation)
        } == {"step"}

    @pytest.mark.parametrize(
        "text",
        [
            '{"status": "failed", "reason": "X", "message": ' + "[" * 2000 + "]" * 2000 + "}",
            '{"status": "failed", "reason": "X", "message": "'
            + "x" * TERMINATION_MESSAGE_LIMIT
            + '"}',
        ],
        ids=["deep", "longer than the kubelet keeps"],
    )
    def test_deep_or_huge_json_is_only_text(self, text: str) -> None:
        seen = observe(job(), [pod("Failed", state=terminated(1, text))])
        assert seen.termination is None
        assert seen.termination_text == text  # reported as text, bounded where it is written
