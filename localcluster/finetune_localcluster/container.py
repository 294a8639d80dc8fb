"""One container of a pod run by the node agent: its state as kubelet reports it, its
local process (started through podexec in private namespaces), restarts and back-off."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune_localcluster import podexec, podstatus
from finetune_localcluster.processes import terminate_group

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Kubelet starts at 10s and caps at 5 minutes; tests want restarts within seconds.
RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 30.0


class ContainerRun:
    """A container's lifecycle on this node: waiting -> running -> terminated, repeated
    when the restart policy asks for it."""

    def __init__(self, spec: Mapping[str, Any], directory: Path, *, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.init = init
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.restart_count = 0
        self.state: dict[str, Any] = podstatus.waiting("ContainerCreating")
        self.last_state: dict[str, Any] = {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at: str | None = None
        self.finished = False  # terminated for good: no restart will follow
        self.next_attempt = 0.0  # monotonic time of the next start attempt
        self.retry_delay = 0.0  # back-off for config, image and restart retries

    # --- status ---------------------------------------------------------------------------
    @property
    def container_id(self) -> str:
        return (
            f"localcluster://{self.directory.parent.parent.name}/{self.name}/{self.restart_count}"
        )

    @property
    def termination_file(self) -> Path:
        return self.directory / "termination-log"

    def log_path(self, restart: int | None = None) -> Path:
        return self.directory / f"{self.restart_count if restart is None else restart}.log"

    def status(self) -> dict[str, Any]:
        """This container's entry in containerStatuses / initContainerStatuses."""
        is_running = "running" in self.state
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image,
            "ready": is_running and not self.init,
            "started": is_running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if is_running or "terminated" in self.state:
            status["containerID"] = self.container_id
        if self.init:
            status["ready"] = (
                "terminated" in self.state and self.state["terminated"]["exitCode"] == 0
            )
        return status

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def due(self, now: float) -> bool:
        """Whether a start should be attempted now."""
        return self.popen is None and not self.finished and now >= self.next_attempt

    def wait_for_retry(self, state: dict[str, Any], first: float, maximum: float) -> None:
        """Stay waiting with `state`, retrying after an exponential back-off."""
        self.state = state
        self.retry_delay = min(max(self.retry_delay * 2, first), maximum)
        self.next_attempt = time.monotonic() + self.retry_delay

    # --- process --------------------------------------------------------------------------
    def start(
        self,
        *,
        argv: list[str],
        env: Mapping[str, str],
        mounts: list[dict[str, Any]],
        hostname: str,
        on_exit: Callable[[], None],
        image_paths: Sequence[str] = (),
    ) -> None:
        """Start the command in its own namespaces, output appended to the log file.
        ``image_paths``: a local image's own directories, kept visible like the project's."""
        self.termination_file.write_bytes(b"")
        mounts = [
            *mounts,
            {
                "source": str(self.termination_file),
                "target": self.spec.get("terminationMessagePath")
                or DEFAULT_TERMINATION_MESSAGE_PATH,
                "read_only": False,
            },
        ]
        error_file = self.directory / f"start-error-{self.restart_count}.json"
        error_file.unlink(missing_ok=True)
        spec = {
            "parent_pid": os.getpid(),
            "root_dir": str(self.directory / "rootfs"),
            "shadow_dir": str(self.directory / "shadows"),
            "start_error_path": str(error_file),
            "image_paths": sorted({*project_paths(), *image_paths}),
            "hostname": hostname,
            "working_dir": self.spec.get("workingDir") or "/",
            "mounts": mounts,
            "argv": argv,
            "env": dict(env),
        }
        spec_file = self.directory / f"spec-{self.restart_count}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(spec, handle)
        with open(self.log_path(), "ab") as log_file:
            # -I -S: podexec needs only the standard library, so skip site-packages.
            self.popen = subprocess.Popen(
                [sys.executable, "-I", "-S", podexec.__file__, str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                start_new_session=True,
            )
        self.started_at = podstatus.now()
        self.state = podstatus.running(self.started_at)
        popen = self.popen

        def wait_and_notify() -> None:
            popen.wait()
            on_exit()

        threading.Thread(target=wait_and_notify, name=f"wait-{self.name}", daemon=True).start()

    def collect_exit(self, restart_policy: str) -> bool:
        """Record the exited process's terminated state; returns True when the container
        will be restarted (after a back-off) under `restart_policy`."""
        assert self.popen is not None and self.popen.returncode is not None
        exit_code, signal = podstatus.exit_code_of(self.popen.returncode)
        self.popen = None
        finished_at = podstatus.now()
        reason: str | None = None
        error_file = self.directory / f"start-error-{self.restart_count}.json"
        started = not (error_file.exists() and error_file.stat().st_size)
        if exit_code == podexec.START_ERROR_EXIT_CODE and not started:
            error = json.loads(error_file.read_text())
            reason, message = error["reason"], error["message"]
        else:
            message = podstatus.termination_message(
                self.termination_file.read_bytes(),
                exit_code,
                self.spec.get("terminationMessagePolicy", "File"),
                self.read_log(),
            )
        self.state = podstatus.terminated(
            exit_code, self.started_at, finished_at, self.container_id, message, reason, signal
        )
        restart = restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)
        if not restart:
            self.finished = True
            return False
        self.last_state = self.state
        self.restart_count += 1
        self.retry_delay = min(
            max(self.retry_delay * 2, RESTART_BACKOFF_START), RESTART_BACKOFF_MAX
        )
        self.next_attempt = time.monotonic() + self.retry_delay
        return True

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period."""
        if self.popen is not None:
            terminate_group(self.popen, grace_seconds)

    def signal_term(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            _killpg(self.popen.pid, 15)

    def signal_kill(self) -> None:
        if self.popen is not None:
            _killpg(self.popen.pid, 9)

    def send_signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            _killpg(self.popen.pid, signum)

    def mark_never_ran(self) -> None:
        """How kubelet reports a container that never ran in a pod that is now terminal."""
        if "terminated" in self.state:
            return
        now = podstatus.now()
        self.state = {
            "terminated": {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "finishedAt": now,
            }
        }
        self.finished = True

    def read_log(self, restart: int | None = None, max_bytes: int | None = 65536) -> str:
        """The container's log (its tail when max_bytes is set)."""
        try:
            with open(self.log_path(restart), "rb") as handle:
                if max_bytes is not None:
                    handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, handle.tell() - max_bytes))
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def project_paths() -> list[str]:
    """The host paths that stand in for a container image: the project's interpreter and
    virtualenv and its source tree (the editable install). A volume mounted over one of them
    (an emptyDir at /tmp when the project lives under /tmp) must not hide it, as a volume
    never hides a real image's /opt/venv."""
    repo = Path(__file__).resolve().parents[2]
    paths = {sys.prefix, sys.base_prefix, str(repo)}
    return sorted(os.path.realpath(p) for p in paths)
