"""Condition transitions with metav1 semantics and the kstatus mapping."""

from __future__ import annotations

import pytest

from finetune_operator import conditions as conditions_module


def conditions_for_phase(*args, **kwargs) -> list[dict]:
    """The conditions as written (the merge patch's form)."""
    return [c.to_wire() for c in conditions_module.conditions_for_phase(*args, **kwargs)]


def by_type(conditions: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conditions}


@pytest.mark.parametrize(
    "phase, true_types",
    [
        ("Pending", {"Reconciling"}),
        ("Running", {"Reconciling"}),
        ("Suspended", {"Suspended"}),
        ("Succeeded", {"Ready", "Complete"}),
        ("Failed", {"Stalled", "Failed"}),
    ],
)
def test_kstatus_mapping(phase: str, true_types: set[str]) -> None:
    conditions = conditions_for_phase(phase, "R", "m", 3, None, "2026-01-01T00:00:00Z")
    assert {c["type"] for c in conditions if c["status"] == "True"} == true_types
    assert all(c["observedGeneration"] == 3 for c in conditions)
    assert all(c["reason"] == "R" and c["message"] == "m" for c in conditions)


def test_transition_time_changes_only_when_status_flips() -> None:
    first = conditions_for_phase("Pending", "A", "", 1, None, "T1")
    second = conditions_for_phase("Running", "B", "", 1, first, "T2")
    third = conditions_for_phase("Succeeded", "C", "", 1, second, "T3")
    assert by_type(second)["Reconciling"]["lastTransitionTime"] == "T1"  # still True
    assert by_type(second)["Reconciling"]["reason"] == "B"
    assert by_type(third)["Reconciling"]["lastTransitionTime"] == "T3"  # True -> False
    assert by_type(third)["Ready"]["lastTransitionTime"] == "T3"  # False -> True
    assert by_type(third)["Stalled"]["lastTransitionTime"] == "T1"  # False all along


def test_foreign_conditions_are_kept() -> None:
    previous = [
        {
            "type": "QuotaReserved",
            "status": "True",
            "reason": "x",
            "message": "",
            "lastTransitionTime": "T0",
        }
    ]
    out = conditions_for_phase("Running", "R", "", 1, previous, "T1")
    assert by_type(out)["QuotaReserved"] == previous[0]
