"""Child processes that never outlive their owner.

Each child runs in its own process group (so its own children are signalled with it), is
stopped with SIGTERM then SIGKILL, and is also killed by the kernel if the thread that
started it dies (parent-death signal, set by util-linux's setpriv; without it a warning
says so, once), which covers an owner killed by any signal, even SIGKILL. Every live child
is registered and an atexit hook stops them all. SIGTERM/SIGHUP handlers are not installed
behind the caller's back (they are process-global); a program that wants a clean stop on
those signals calls install_signal_handlers()."""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()
_handlers_installed = False


class ManagedProcess:
    """One long-running child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        """Start the child in a new session, appending its output to the log file."""
        install_cleanup_handlers()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv
        setpriv = _setpriv()
        if setpriv:
            # The kernel kills the child if this thread dies, even by SIGKILL.
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        with _live_lock:
            _live.add(self)
        log.info("started %s (pid %d), log %s", self.name, self.popen.pid, self.log_path)

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last bytes of the log, for error messages."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - max_bytes))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL it."""
        if self.popen is None:
            return
        terminate_group(self.popen, timeout)
        with _live_lock:
            _live.discard(self)


@functools.cache
def _setpriv() -> str | None:
    """setpriv (util-linux), looked up once. Without it children can outlive a killed
    owner (only the atexit hook stops them, and SIGKILL skips it): said once, here."""
    found = shutil.which("setpriv")
    if found is None:
        log.warning(
            "setpriv (util-linux) not found: child processes get no parent-death signal and "
            "can outlive this process if it is killed with SIGKILL; install util-linux"
        )
    return found


def terminate_group(popen: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a process started with start_new_session=True and everything in its group."""
    pgid = popen.pid
    if popen.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
    # Kill the group even if the leader is gone: its children may still hold ports.
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all() -> None:
    """Run the stop hooks (node agents kill their pods), then stop every registered child,
    newest first (the apiserver before etcd)."""
    _run_stop_hooks()
    with _live_lock:
        procs = sorted(_live, key=lambda proc: proc.started_at)
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)


_stop_hooks: list[object] = []


def register_stop_hook(hook: object) -> None:
    """Call `hook()` before the children are stopped at interpreter exit (or on a signal
    handled by install_signal_handlers), e.g. a node agent's stop."""
    install_cleanup_handlers()
    _stop_hooks.append(hook)


def unregister_stop_hook(hook: object) -> None:
    with contextlib.suppress(ValueError):
        _stop_hooks.remove(hook)


def _run_stop_hooks() -> None:
    for hook in reversed(list(_stop_hooks)):
        with contextlib.suppress(Exception):
            hook()  # type: ignore[operator]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    log.warning("signal %d: stopping local cluster processes", signum)
    stop_all()
    # Re-deliver with the default action so the exit status still says "killed by signal".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)


def install_cleanup_handlers() -> None:
    """Register the atexit hook that stops every child (once)."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(stop_all)


def install_signal_handlers() -> None:
    """Stop every child on SIGTERM/SIGHUP, then die of that signal. Only for the main
    thread of a program that owns its signal handling (not for pytest)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)
