"""The progress deadline (spec.lifecycle.progressDeadlineSeconds), on a fake clock: when a
Running trainer is Stalled, what the status and the Event say, when the work queue brings
the FineTuneJob back, the restart with onStall: Restart, and the trainer's stage on its
way from the metrics endpoint into status.progress.stage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from finetune_api.contract import TrainerProgress, TrainerStage
from finetune_api.spec import DEFAULT_PROGRESS_DEADLINE_SECONDS, FineTuneJobSpec, LifecycleSpec
from finetune_api.status import FineTuneJobStatus, Phase, Reason
from finetune_operator.progress import ProgressBoard, Watch, progress_status
from finetune_operator.scrape import parse_progress
from finetune_operator.stall import (
    DEADLINE_MARGIN_SECONDS,
    UNSEEN_RETRY_SECONDS,
    check_progress,
)
from finetune_operator.status_update import StatusUpdate
from finetune_operator.timeutil import rfc3339

from .conftest import JOB_UID, body, pod
from .test_reconciler import MemoryKube, Operator, condition

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
DEADLINE = 600


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trainer_pod(started: datetime = T0, name: str = "p1", created: str = "T1") -> dict[str, Any]:
    running = {"running": {"startedAt": rfc3339(started)}}
    found = pod("Running", name=name, created=created, state=running, ip="10.0.0.7")
    found["metadata"]["namespace"] = "ml"
    return found


def job(failed: int = 0, backoff_limit: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "uid": JOB_UID},
        "spec": {"backoffLimit": backoff_limit},
        "status": {"failed": failed} if failed else {},
    }


def running_update() -> StatusUpdate:
    return StatusUpdate(
        FineTuneJobStatus(phase=Phase.RUNNING, reason=Reason.RUNNING, message="training")
    )


def lifecycle(**fields: Any) -> LifecycleSpec:
    return LifecycleSpec.model_validate({"progressDeadlineSeconds": DEADLINE, **fields})


def watch(
    step: int | None = 7,
    stage: TrainerStage | None = TrainerStage.TRAINING,
    *,
    first_tried: datetime = T0,
    changed_at: datetime | None = None,
    silent_since: datetime | None = None,
    answered: bool = True,
) -> Watch:
    reading = TrainerProgress(step=step, total_steps=20, stage=stage) if answered else None
    return Watch(reading, first_tried, changed_at, silent_since)


def check(
    now: datetime,
    seen: Watch | None,
    *,
    previous: dict[str, Any] | None = None,
    started: datetime = T0,
    update: StatusUpdate | None = None,
    the_job: dict[str, Any] | None = None,
    **fields: Any,
) -> Any:
    return check_progress(
        update or running_update(),
        previous=previous or {"phase": "Running", "reason": "Running"},
        lifecycle=lifecycle(**fields),
        job=the_job or job(),
        pod=trainer_pod(started),
        watch=seen,
        generation=1,
        now=now,
    )


# --- the API -------------------------------------------------------------------------------


def test_the_defaults_report_after_half_an_hour() -> None:
    spec = FineTuneJobSpec.model_validate({"output": {"pvc": {"claimName": "out"}}})
    assert spec.lifecycle.progress_deadline_seconds == DEFAULT_PROGRESS_DEADLINE_SECONDS == 1800
    assert spec.lifecycle.on_stall == "Report"


# --- the deadline --------------------------------------------------------------------------


def test_before_the_deadline_the_queue_brings_it_back_when_it_falls_due() -> None:
    result = check(at(100), watch(changed_at=at(40)))
    assert result.update.status.reason == Reason.RUNNING
    assert result.delete_pod is None
    assert result.retry_after == DEADLINE - 60 + DEADLINE_MARGIN_SECONDS


def test_counted_from_the_trainers_start_before_any_change() -> None:
    result = check(at(DEADLINE - 1), watch(changed_at=None))
    assert result.retry_after == 1 + DEADLINE_MARGIN_SECONDS
    assert check(at(DEADLINE), watch(changed_at=None)).update.status.reason == (
        Reason.PROGRESS_DEADLINE_EXCEEDED
    )


def test_past_the_deadline_it_is_stalled_and_stays_running() -> None:
    result = check(at(700), watch(changed_at=at(60)))
    status = result.update.status
    assert status.phase == Phase.RUNNING
    assert status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    conditions = {c.type: c for c in status.conditions or []}
    assert conditions["Stalled"].status == "True"
    assert conditions["Stalled"].reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert conditions["Reconciling"].status == "False"
    assert conditions["Ready"].status == "False"
    message = status.message or ""
    assert "no training progress since 2026-01-01T12:01:00Z" in message
    assert "progressDeadlineSeconds is 600s" in message
    assert "step 7/20, stage Training" in message
    assert "kubectl logs p1" in message
    assert "set spec.lifecycle.onStall: Restart" in message
    # Reported only: nothing to delete, and nothing to wait for but a change.
    assert result.delete_pod is None and result.retry_after is None
    assert [(e.type, e.reason) for e in result.update.events] == [
        ("Warning", Reason.PROGRESS_DEADLINE_EXCEEDED)
    ]


def test_the_event_is_said_once_and_the_message_does_not_change_while_it_lasts() -> None:
    first = check(at(700), watch(changed_at=at(60)))
    stored = first.update.status.to_wire()
    later = check(at(5000), watch(changed_at=at(60)), previous=stored)
    assert later.update.events == []
    assert later.update.status.message == stored["message"]
    assert not later.update.changed_from(stored)


def test_a_silent_endpoint_is_named() -> None:
    result = check(at(700), watch(changed_at=at(60), silent_since=at(80)))
    assert "its metrics endpoint is not answering" in (result.update.status.message or "")


def test_an_endpoint_that_answers_now_and_then_writes_no_status_each_time() -> None:
    first = check(at(700), watch(changed_at=at(60), silent_since=at(80)))
    stored = first.update.status.to_wire()
    again = check(at(760), watch(changed_at=at(60), silent_since=at(740)), previous=stored)
    assert not again.update.changed_from(stored)


def test_an_endpoint_that_never_answered_is_counted_from_the_first_try() -> None:
    # As after an operator restart: the poller's first try starts the count.
    seen = watch(answered=False, first_tried=at(300), silent_since=at(300))
    assert check(at(700), seen).retry_after == 200 + DEADLINE_MARGIN_SECONDS
    stalled = check(at(900), seen).update.status
    assert stalled.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert "no step done yet, stage unknown" in (stalled.message or "")
    assert "has not answered since 2026-01-01T12:05:00Z" in (stalled.message or "")


def test_the_stored_progress_time_survives_an_operator_restart() -> None:
    # A new operator process has read the trainer once (no change seen yet): the stored
    # updatedAt says when it last made progress.
    previous = {
        "phase": "Running",
        "reason": "Running",
        "progress": {"updatedAt": rfc3339(at(500))},
    }
    assert check(at(1000), watch(), previous=previous).retry_after == (
        100 + DEADLINE_MARGIN_SECONDS
    )
    # A status about to record new progress counts as progress now.
    update = running_update()
    update.status.progress = progress_status(TrainerProgress(step=8), None, at(1000))
    assert check(at(1200), watch(), previous=previous, update=update).retry_after == (
        400 + DEADLINE_MARGIN_SECONDS
    )


def test_nothing_is_judged_before_the_poller_has_tried_the_trainer() -> None:
    result = check(at(5000), None)
    assert result.update.status.reason == Reason.RUNNING
    assert result.retry_after == UNSEEN_RETRY_SECONDS


def test_restart_deletes_the_pod_while_backoff_limit_leaves_a_retry() -> None:
    result = check(at(700), watch(changed_at=at(60)), onStall="Restart", the_job=job(failed=2))
    assert result.delete_pod == ("ml", "p1", "uid-p1")
    message = result.update.status.message or ""
    assert "deleting trainer pod p1 so the Job retries from its newest checkpoint" in message
    checkpointed = {"phase": "Running", "reason": "Running", "checkpoint": {"step": 4, "uri": "u"}}
    again = check(at(700), watch(changed_at=at(60)), previous=checkpointed, onStall="Restart")
    assert "retries from checkpoint-4" in (again.update.status.message or "")


def test_restart_never_fails_the_job_by_using_its_last_retry() -> None:
    result = check(at(700), watch(changed_at=at(60)), onStall="Restart", the_job=job(failed=3))
    assert result.delete_pod is None
    assert result.update.status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert "not restarted: the Job has used spec.lifecycle.backoffLimit's 3 retries" in (
        result.update.status.message or ""
    )


def test_switching_to_restart_while_stalled_is_announced() -> None:
    reported = check(at(700), watch(changed_at=at(60))).update.status.to_wire()
    restarted = check(at(800), watch(changed_at=at(60)), previous=reported, onStall="Restart")
    assert restarted.delete_pod is not None
    assert [e.reason for e in restarted.update.events] == [Reason.PROGRESS_DEADLINE_EXCEEDED]


# --- the progress board --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_the_board_remembers_when_a_reading_changed_and_since_when_it_is_silent() -> None:
    clock = Clock()
    board = ProgressBoard(clock=clock)
    key = ("ml", "run")
    assert board.watch(key, "pod-a") is None
    assert board.record(key, "pod-a", TrainerProgress(stage=TrainerStage.DOWNLOADING))
    clock.now = at(10)
    assert not board.record(key, "pod-a", TrainerProgress(stage=TrainerStage.DOWNLOADING))
    seen = board.watch(key, "pod-a")
    assert seen is not None and seen.changed_at is None and seen.first_tried == T0
    clock.now = at(20)
    assert board.record(key, "pod-a", TrainerProgress(stage=TrainerStage.LOADING))
    clock.now = at(30)
    assert not board.unanswered(key, "pod-a")  # known already: no reconcile of its own
    clock.now = at(40)
    board.unanswered(key, "pod-a")
    seen = board.watch(key, "pod-a")
    assert seen is not None and (seen.changed_at, seen.silent_since) == (at(20), at(30))
    assert seen.reading is not None and seen.reading.stage == TrainerStage.LOADING
    board.record(key, "pod-a", TrainerProgress(stage=TrainerStage.LOADING))
    seen = board.watch(key, "pod-a")
    assert seen is not None and seen.silent_since is None
    # The Job's next pod starts afresh; its first unanswered read queues the FineTuneJob.
    clock.now = at(50)
    assert board.unanswered(key, "pod-b")
    fresh = board.watch(key, "pod-b")
    assert fresh == Watch(None, at(50), None, at(50))
    assert board.watch(key, "pod-a") is None


# --- the stage, from the endpoint to the status ----------------------------------------------


def test_the_stage_is_read_from_the_state_set() -> None:
    text = "\n".join(
        f'finetune_stage{{finetune_stage="{stage}"}} {1.0 if stage == "Compiling" else 0.0}'
        for stage in TrainerStage
    )
    assert parse_progress(text).stage == TrainerStage.COMPILING
    # Not a stage of the contract, a second label, or not 1: left out.
    for bogus in (
        'finetune_stage{finetune_stage="Mining"} 1',
        'finetune_stage{finetune_stage="Training",x="y"} 1',
        'finetune_stage{finetune_stage="Training"} 2',
        'finetune_stage{other="Training"} 1',
    ):
        assert parse_progress(bogus).stage is None, bogus


def test_the_stage_alone_is_progress_in_the_status() -> None:
    first = progress_status(TrainerProgress(stage=TrainerStage.LOADING), None, T0)
    assert first is not None
    written = first.to_wire()
    assert written == {"stage": "Loading", "updatedAt": "2026-01-01T12:00:00Z"}
    assert progress_status(TrainerProgress(stage=TrainerStage.LOADING), written, at(5)) is None
    moved = progress_status(TrainerProgress(stage=TrainerStage.COMPILING), written, at(9))
    assert moved is not None and moved.to_wire()["updatedAt"] == "2026-01-01T12:00:09Z"


# --- the reconciler, on a moving clock ----------------------------------------------------------


class StallKube(MemoryKube):
    def __init__(self, ftj: dict[str, Any]) -> None:
        super().__init__(ftj)
        self.deleted_pods: list[tuple[str, str]] = []

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self.deleted_pods.append((name, uid))


def stall_operator(**lifecycle_fields: Any) -> tuple[StallKube, Operator, Clock]:
    spec = {"lifecycle": {"progressDeadlineSeconds": DEADLINE, **lifecycle_fields}}
    kube = StallKube(body(spec))
    clock = Clock()
    operator = Operator(kube)
    operator.progress = operator.reconciler.progress = ProgressBoard(clock=clock)
    operator.reconciler.clock = clock
    operator.reconcile()  # creates the Job
    kube.pods = [trainer_pod()]
    return kube, operator, clock


def test_a_quiet_trainer_costs_one_reconcile_per_deadline_and_no_write() -> None:
    kube, operator, clock = stall_operator()
    operator.progress.record(Operator.KEY, "uid-p1", TrainerProgress(step=3, total_steps=20))
    assert operator.reconcile() == "Running"
    assert operator.outcome is not None
    assert operator.outcome.retry_after == DEADLINE + DEADLINE_MARGIN_SECONDS
    writes = len(kube.patches)
    clock.now = at(300)  # brought back by something else meanwhile: nothing to write
    operator.reconcile()
    assert len(kube.patches) == writes
    assert operator.outcome.retry_after == DEADLINE - 300 + DEADLINE_MARGIN_SECONDS


def test_stalled_then_cleared_when_the_step_advances() -> None:
    kube, operator, clock = stall_operator()
    operator.progress.record(Operator.KEY, "uid-p1", TrainerProgress(step=3, total_steps=20))
    operator.reconcile()
    clock.now = at(DEADLINE + 1)  # the work queue brings it back
    assert operator.reconcile() == "Running"
    status = kube.ftj["status"]
    assert status["reason"] == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert condition(status, "Stalled") == "True"
    assert ("Warning", "ProgressDeadlineExceeded") in kube.events
    assert kube.deleted_pods == []
    writes = len(kube.patches)
    operator.reconcile()
    assert len(kube.patches) == writes  # stable while it lasts

    clock.now = at(DEADLINE + 30)
    operator.progress.record(Operator.KEY, "uid-p1", TrainerProgress(step=4, total_steps=20))
    operator.reconcile()
    status = kube.ftj["status"]
    assert (status["phase"], status["reason"]) == ("Running", "Running")
    assert condition(status, "Stalled") == "False"
    assert condition(status, "Reconciling") == "True"
    assert operator.outcome is not None
    assert operator.outcome.retry_after == DEADLINE + DEADLINE_MARGIN_SECONDS


def test_restart_deletes_the_stalled_pod_once_the_status_says_why() -> None:
    kube, operator, clock = stall_operator(onStall="Restart")
    operator.progress.unanswered(Operator.KEY, "uid-p1")  # the endpoint never answers
    operator.reconcile()
    clock.now = at(DEADLINE + 1)
    operator.reconcile()
    assert kube.deleted_pods == [("p1", "uid-p1")]
    assert "deleting trainer pod p1" in kube.ftj["status"]["message"]
    # The pod goes; the Job's next one is a restart, and the stall is over.
    kube.pods = [trainer_pod(at(DEADLINE + 90), name="p2", created="T2")]
    kube.jobs[next(iter(kube.jobs))]["status"] = {"failed": 1}
    clock.now = at(DEADLINE + 95)
    assert operator.reconcile() == "Running"
    status = kube.ftj["status"]
    assert status["restarts"] == 1 and status["podName"] == "p2"
    assert condition(status, "Stalled") == "False"
    assert kube.deleted_pods == [("p1", "uid-p1")]


def test_a_recorded_stall_is_kept_by_a_restarted_operator_until_the_trainer_answers() -> None:
    stalled = check(at(700), watch(changed_at=at(60), silent_since=at(80)))
    stored = {**stalled.update.status.to_wire(), "podName": "p1"}
    # A new operator process: not yet tried, then tried without an answer.
    for seen in (None, watch(answered=False, first_tried=at(800), silent_since=at(800))):
        kept = check(at(810), seen, previous=stored)
        assert kept.update.status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
        assert not kept.update.changed_from(stored) and kept.update.events == []
    # It answers with progress the status has not seen: the stall is over.
    update = running_update()
    update.status.progress = progress_status(TrainerProgress(step=8), None, at(820))
    moved = check(at(820), watch(step=8, changed_at=None), previous=stored, update=update)
    assert moved.update.status.reason == Reason.RUNNING
