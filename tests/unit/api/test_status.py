"""The typed status: the phases and reasons, and the one way a status becomes a patch."""

from __future__ import annotations

import math

import pytest

from finetune_api.crd import build_crd
from finetune_api.safe_text import MESSAGE_LIMIT
from finetune_api.status import (
    MAX_SHORT,
    MAX_URI,
    TERMINAL_PHASES,
    FineTuneJobStatus,
    OutputStatus,
    Phase,
    Reason,
    duration_display,
    loss_display,
)


def test_the_crd_offers_exactly_the_phases() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    phase = schema["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == [p.value for p in Phase]
    assert {Phase.SUCCEEDED, Phase.FAILED} == TERMINAL_PHASES


def test_phases_and_reasons_read_as_the_strings_a_stored_status_holds() -> None:
    assert "Succeeded" in TERMINAL_PHASES and Phase("Running") == "Running"
    assert f"{Phase.FAILED}: {Reason.JOB_DELETED}" == "Failed: JobDeleted"


def test_only_the_fields_set_are_written_and_a_none_among_them_as_null() -> None:
    status = FineTuneJobStatus(phase=Phase.RUNNING, pod_name=None)
    assert status.to_wire() == {"phase": "Running", "podName": None}
    status.completion_time = None
    assert status.to_wire() == {"phase": "Running", "podName": None, "completionTime": None}


def test_every_string_is_bounded_and_escaped_as_the_model_takes_it() -> None:
    long = "\x1b]0;" + "x" * 50_000
    status = FineTuneJobStatus(message=long, reason=long, output=OutputStatus(adapter_uri=long))
    status.job_name = long
    wire = status.to_wire()
    assert len(wire["message"]) == MESSAGE_LIMIT and wire["message"].startswith("\\x1b]0;")
    assert len(wire["reason"]) == len(wire["jobName"]) == MAX_SHORT
    assert len(wire["output"]["adapterUri"]) == MAX_URI  # type: ignore[index]


@pytest.mark.parametrize(
    "loss, shown",
    [
        (10.494906425476074, "10.49"),
        (1.7340021133422852, "1.734"),
        (2.5, "2.5"),
        (0.81234567, "0.8123"),
        (0.0012345678, "0.001235"),
        (0.000012345678, "1.235e-05"),
        (123.456789, "123.5"),
        (9999.4, "9999"),
        (12345.678, "1.235e+04"),
        (1e300, "1e+300"),
        (0.0, "0"),
        (-0.5, "-0.5"),
        (None, None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
    ],
)
def test_the_loss_a_person_reads(loss: float | None, shown: str | None) -> None:
    """Four significant digits; no text for what is no loss (the field is left out)."""
    assert loss_display(loss) == shown
    if shown is not None:
        assert len(shown) <= 10


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45, "45s"), (725, "12m05s"), (12840, "3h34m"), (180000, "50h00m"), (None, None)],
)
def test_an_eta_reads_as_a_person_says_it(seconds: int | None, shown: str | None) -> None:
    assert duration_display(seconds) == shown
