"""Unit tests of the node agent's pure parts (no control plane needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import finetune_localcluster
from finetune_localcluster import podstatus
from finetune_localcluster.images import registry_host, simulated_pull_error
from finetune_localcluster.podenv import ContainerConfigError, expand, field_value
from finetune_localcluster.quantity import divide_rounding_up


def test_resource_values_round_up_like_the_downward_api() -> None:
    assert divide_rounding_up("500m", None) == "1"
    assert divide_rounding_up("1Gi", "1Mi") == "1024"


def test_expand_follows_kubernetes_rules() -> None:
    variables = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", variables) == "x-y"
    assert expand("$$(A)", variables) == "$(A)"  # escaped
    assert expand("$(MISSING)", variables) == "$(MISSING)"  # left as written
    assert expand("cost: $5", variables) == "cost: $5"


def test_field_values() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1", "b": "2"}},
        "spec": {"nodeName": "n", "serviceAccountName": "sa"},
        "status": {"podIP": "127.0.0.9", "hostIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.9"}]},
    }
    assert field_value(pod, "status.podIP") == "127.0.0.9"
    assert field_value(pod, "spec.nodeName") == "n"
    assert field_value(pod, "metadata.labels['b']") == "2"
    assert field_value(pod, "metadata.labels") == 'a="1"\nb="2"'
    with pytest.raises(ContainerConfigError):
        field_value(pod, "spec.containers")


def test_registry_hosts_and_simulated_pull_failures() -> None:
    assert registry_host("registry.invalid/x:1") == "registry.invalid"
    assert registry_host("localhost:5000/x") == "localhost"
    assert registry_host("python:3.11") == ""
    assert simulated_pull_error("python:3.11") is None
    error = simulated_pull_error("registry.invalid/team/x:1")
    assert error is not None and "lookup registry.invalid: no such host" in error


def _status(state: dict[str, object], last: dict[str, object] | None = None) -> dict[str, object]:
    return {"name": "c", "state": state, "lastState": last or {}}


def test_phase_follows_kubelet() -> None:
    done = podstatus.terminated(0, None, "t", "id")
    failed = podstatus.terminated(3, None, "t", "id")
    waiting = podstatus.waiting("ContainerCreating")
    assert podstatus.phase("Never", True, [_status(waiting)]) == "Pending"
    assert podstatus.phase("Never", False, [_status(waiting)]) == "Pending"
    assert podstatus.phase("Never", False, [_status(podstatus.running("t"))]) == "Running"
    assert podstatus.phase("Never", False, [_status(done)]) == "Succeeded"
    assert podstatus.phase("Never", False, [_status(done), _status(failed)]) == "Failed"
    assert podstatus.phase("OnFailure", False, [_status(failed)]) == "Running"
    crash = podstatus.waiting("CrashLoopBackOff")
    assert podstatus.phase("Always", False, [_status(crash, failed)]) == "Running"


def test_exit_codes_of_signals() -> None:
    assert podstatus.exit_code_of(-9) == (137, 9)
    assert podstatus.exit_code_of(3) == (3, None)


def test_termination_message_falls_back_to_logs_only_on_error() -> None:
    logs = "\n".join(f"line {i}" for i in range(100))
    policy = "FallbackToLogsOnError"
    assert podstatus.termination_message(b"", 1, policy, logs).endswith("line 99")
    assert podstatus.termination_message(b"", 0, policy, logs) == ""
    assert podstatus.termination_message(b"", 1, "File", logs) == ""
    assert podstatus.termination_message(b"summary", 1, policy, logs) == "summary"


def test_condition_transition_time_moves_only_on_flip(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = podstatus.ConditionTracker()
    monkeypatch.setattr(podstatus, "now", lambda: "T1")
    tracker.set("Ready", False, "ContainersNotReady", "waiting")
    monkeypatch.setattr(podstatus, "now", lambda: "T2")
    tracker.set("Ready", False, "ContainersNotReady", "still waiting")
    assert tracker.as_list()[0]["lastTransitionTime"] == "T1"
    tracker.set("Ready", True)
    ready = tracker.as_list()[0]
    assert ready["lastTransitionTime"] == "T2"
    assert ready["message"] is None  # cleared, not left stale by the merge patch


@pytest.mark.parametrize("module", ["podrunner", "kubeletserver"])
def test_pod_parts_know_the_agent_only_through_protocols(module: str) -> None:
    """The pod worker and the kubelet endpoint name what they use of the node agent in
    their own Protocols; neither imports the agent, which builds both."""
    package = Path(finetune_localcluster.__file__).parent
    tree = ast.parse((package / f"{module}.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "finetune_localcluster.nodeagent" not in imported
