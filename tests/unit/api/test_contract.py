"""The operator/trainer contract: exit codes, reasons and the termination message (the
operator's reading of the metrics is tested with it, in tests/unit/operator/test_scrape.py)."""

from __future__ import annotations

import json
import re

import pytest

from finetune_api.contract import (
    GENERIC_REASONS,
    TERMINATION_MESSAGE_LIMIT,
    TRAINER_REASONS,
    CheckpointRef,
    ExitCode,
    TerminationMessage,
    TerminationStatus,
    TrainerProgress,
)


def test_termination_message_round_trip() -> None:
    message = TerminationMessage(
        status="succeeded",
        reason="Completed",
        step=20,
        total_steps=20,
        loss=1.2,
        checkpoint=CheckpointRef(step=20, uri="pvc://out/a/checkpoint-20"),
        adapter_uri="pvc://out/a/final_model",
    )
    text = message.encode()
    assert json.loads(text)["adapterUri"] == "pvc://out/a/final_model"
    assert TerminationMessage.decode(text) == message


def test_termination_message_fits_the_kubelet_limit() -> None:
    message = TerminationMessage(status="failed", reason="Crash", message="x" * 10000)
    text = message.encode()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = TerminationMessage.decode(text)
    assert decoded is not None and decoded.message.endswith("[truncated]")


def test_foreign_text_is_not_a_termination_message() -> None:
    assert TerminationMessage.decode("Traceback (most recent call last): ...") is None


def test_exit_codes_are_distinct_and_stable() -> None:
    assert int(ExitCode.INVALID_INPUT) == 78
    assert int(ExitCode.INTERRUPTED) == 75
    assert len({int(c) for c in ExitCode}) == len(ExitCode)


# --- The trainer's reasons -------------------------------------------------------------------


def test_reasons_are_camel_case_condition_reasons() -> None:
    """Each may go into a metav1.Condition's reason as it is."""
    for reason in TRAINER_REASONS:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", reason), reason
    assert {g.value for g in GENERIC_REASONS.values()} <= TRAINER_REASONS
    assert set(GENERIC_REASONS) == set(TerminationStatus.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("invalid_input", "InvalidDataset", "InvalidDataset"),
        ("invalid_input", "Pwned by tenant", "InvalidInput"),
        ("failed", "x" * 300, "TrainingFailed"),
        ("succeeded", "Ready", "Completed"),
        ("interrupted", "", "Interrupted"),
    ],
)
def test_a_reason_outside_the_set_reads_as_the_generic_one(
    status: str, reason: str, expected: str
) -> None:
    text = json.dumps({"status": status, "reason": reason, "message": "m"})
    decoded = TerminationMessage.decode(text)
    assert decoded is not None  # still decoded: a foreign reason is not a foreign message
    assert decoded.reason == reason
    assert decoded.known_reason == expected


def test_a_termination_message_carries_the_progress_the_metrics_would_report() -> None:
    message = TerminationMessage(
        status="interrupted",
        reason="Interrupted",
        step=12,
        total_steps=20,
        loss=1.7,
        checkpoint=CheckpointRef(step=10, uri="pvc://out/a/checkpoint-10"),
        resumed_from_step=4,
    )
    assert message.progress == TrainerProgress(step=12, total_steps=20, loss=1.7)
    assert TerminationMessage(status="failed", reason="TrainingFailed").progress == (
        TrainerProgress()
    )
