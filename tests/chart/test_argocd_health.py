"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 interpreter, the
Lua version Argo CD embeds, on sample FineTuneJobs and on the statuses the operator's own
condition code produces."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from finetune_operator.conditions import conditions_for_phase

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "deploy" / "argocd"
HEALTH_LUA = (ARGOCD / "health.lua").read_text()
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua as Argo CD does: `obj` is a global, the script returns the status."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    sandbox = lua.globals()
    # Argo CD's VM has no file or process access; neither may the script.
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        sandbox[name] = None
    sandbox.obj = lua.table_from(copy.deepcopy(obj), recursive=True)
    result = lua.execute(HEALTH_LUA)
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_sample_finetunejobs(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert argocd_health(obj) == case["healthStatus"]


def test_every_sample_is_a_case() -> None:
    samples = {p.relative_to(ARGOCD).as_posix() for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert samples == {c["inputPath"] for c in CASES}


# The mapping the chart README documents, phase -> Argo CD health.
EXPECTED = {
    "Pending": "Progressing",
    "Running": "Progressing",
    "Suspended": "Suspended",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
}


def _operator_status(phase: str) -> dict[str, Any]:
    conditions = conditions_for_phase(
        phase, "SomeReason", "some message", 4, None, "2026-01-01T00:00:00Z"
    )
    return {
        "phase": phase,
        "reason": "SomeReason",
        "message": "some message",
        "observedGeneration": 4,
        "conditions": conditions,
    }


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_statuses_the_operator_writes(phase: str) -> None:
    obj = {"metadata": {"name": "x", "generation": 4}, "status": _operator_status(phase)}
    health = argocd_health(obj)
    assert health["status"] == EXPECTED[phase]
    assert health["message"] == "SomeReason: some message"


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_conditions_alone_decide(phase: str) -> None:
    """Without `phase`, the kstatus conditions give the same answer."""
    status = _operator_status(phase)
    del status["phase"]
    obj = {"metadata": {"name": "x", "generation": 4}, "status": status}
    assert argocd_health(obj)["status"] == EXPECTED[phase]


def test_a_status_older_than_the_spec_is_progressing_whatever_its_phase() -> None:
    obj = {"metadata": {"name": "x", "generation": 5}, "status": _operator_status("Succeeded")}
    assert argocd_health(obj) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 5",
    }


def test_argocd_cm_snippet_installs_this_script() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"] == {
        "resource.customizations.health.finetune.dev_FineTuneJob": HEALTH_LUA
    }
