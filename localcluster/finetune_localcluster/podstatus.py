"""Pure functions computing a pod's status the way kubelet does: container states, the
phase, and the Initialized / ContainersReady / Ready / PodReadyToStartContainers
conditions (metav1 semantics: lastTransitionTime moves only when status flips)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

# Conditions owned by the node; PodScheduled and DisruptionTarget belong to others.
NODE_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def now() -> str:
    """The current time in the API's RFC 3339 form (seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def running(started_at: str) -> dict[str, Any]:
    return {"running": {"startedAt": started_at}}


def terminated(
    exit_code: int,
    started_at: str | None,
    finished_at: str,
    container_id: str,
    message: str = "",
    reason: str | None = None,
    signal: int | None = None,
) -> dict[str, Any]:
    """A terminated state; the reason is kubelet's: Completed for 0, Error otherwise."""
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at or finished_at,
        "finishedAt": finished_at,
        "containerID": container_id,
    }
    if signal is not None:
        state["signal"] = signal
    if message:
        state["message"] = message
    return {"terminated": state}


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """A Popen return code as (container exit code, signal): a process killed by signal N
    exits with 128+N, as container runtimes report it."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def termination_message(file_content: bytes, exit_code: int, policy: str, log_tail: str) -> str:
    """The container's termination message: the file's content, or for
    FallbackToLogsOnError the log's last lines when the file is empty and it failed."""
    message = file_content[:MAX_TERMINATION_MESSAGE_BYTES].decode(errors="replace")
    if not message.strip() and exit_code != 0 and policy == "FallbackToLogsOnError":
        lines = log_tail.splitlines()[-FALLBACK_LOG_LINES:]
        message = "\n".join(lines)[-FALLBACK_LOG_BYTES:]
    return message


def phase(
    restart_policy: str,
    init_pending: bool,
    statuses: Sequence[Mapping[str, Any]],
) -> str:
    """Kubelet's getPhase for the main containers' statuses."""
    if init_pending:
        return "Pending"
    waiting_count = running_count = stopped = succeeded = 0
    for status in statuses:
        state = status.get("state", {})
        if "running" in state:
            running_count += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"]["exitCode"] == 0:
                succeeded += 1
        elif status.get("lastState", {}).get("terminated"):
            stopped += 1  # restarting: counts as having run
        else:
            waiting_count += 1
    if waiting_count > 0:
        return "Pending"
    if running_count > 0:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Running" if restart_policy == "OnFailure" else "Failed"


def terminal_phase(statuses: Sequence[Mapping[str, Any]]) -> str:
    """The phase of a pod whose containers were all stopped for good (deleted pods)."""
    ok = all(
        "terminated" in s.get("state", {}) and s["state"]["terminated"]["exitCode"] == 0
        for s in statuses
    )
    return "Succeeded" if ok else "Failed"


class ConditionTracker:
    """The node-owned pod conditions, remembering when each last flipped."""

    def __init__(self) -> None:
        self._conditions: dict[str, dict[str, Any]] = {}

    def set(self, kind: str, status: bool, reason: str = "", message: str = "") -> None:
        value = "True" if status else "False"
        previous = self._conditions.get(kind)
        transition = (
            previous["lastTransitionTime"] if previous and previous["status"] == value else now()
        )
        # Reason and message are always sent (null when empty): the status is written with
        # a strategic merge patch, which would otherwise keep a stale message.
        self._conditions[kind] = {
            "type": kind,
            "status": value,
            "reason": reason or None,
            "message": message or None,
            "lastProbeTime": None,
            "lastTransitionTime": transition,
        }

    def as_list(self) -> list[dict[str, Any]]:
        return [self._conditions[k] for k in NODE_CONDITIONS if k in self._conditions]


def update_conditions(
    tracker: ConditionTracker,
    *,
    sandbox_ready: bool,
    init_statuses: Sequence[Mapping[str, Any]],
    init_done: bool,
    statuses: Sequence[Mapping[str, Any]],
    pod_phase: str,
) -> None:
    """Set the four node-owned conditions from the container statuses."""
    tracker.set("PodReadyToStartContainers", sandbox_ready)
    if init_done:
        tracker.set("Initialized", True)
    else:
        incomplete = [s["name"] for s in init_statuses if "terminated" not in s.get("state", {})]
        tracker.set(
            "Initialized",
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
    unready = [s["name"] for s in statuses if not s.get("ready")]
    if not unready:
        tracker.set("ContainersReady", True)
        tracker.set("Ready", True)
        return
    reason = "PodCompleted" if pod_phase == "Succeeded" else "ContainersNotReady"
    message = (
        ""
        if reason == "PodCompleted"
        else (f"containers with unready status: [{' '.join(unready)}]")
    )
    tracker.set("ContainersReady", False, reason, message)
    tracker.set("Ready", False, reason, message)
