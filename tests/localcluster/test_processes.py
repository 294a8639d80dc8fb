"""Child processes never outlive their owner: a control plane whose owner is killed with
SIGKILL leaves no process behind, and a machine without setpriv is warned about."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_localcluster import processes
from finetune_localcluster.binaries import Binaries
from finetune_localcluster.processes import ManagedProcess
from finetune_localcluster.waiting import wait_for

# Starts a control plane, prints the pids of its components, and waits to be killed.
OWNER = """
import sys, time
from pathlib import Path
from finetune_localcluster.binaries import Binaries
from finetune_localcluster.controlplane import ControlPlane

plane = ControlPlane(Path(sys.argv[2]), binaries=Binaries(Path(sys.argv[1])))
plane.start()
print(" ".join(str(p.pid) for p in plane.processes.values()), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended; only its parent has not reaped it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.e2e
def test_a_control_plane_dies_with_its_killed_owner(
    localcluster_binaries: Binaries, tmp_path: Path
) -> None:
    log_path = tmp_path / "owner.log"
    with log_path.open("w") as log_file:
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(localcluster_binaries.directory), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    pids: list[int] = []
    try:
        assert owner.stdout is not None
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 4, log_path.read_text()[-3000:]  # etcd, apiserver, kcm, scheduler
        assert all(_alive(pid) for pid in pids)
        owner.send_signal(signal.SIGKILL)  # no atexit hook, no signal handler runs
        owner.wait(timeout=10)
        wait_for(
            lambda: not [pid for pid in pids if _alive(pid)],
            timeout=5,
            message="every control plane process to end with its owner",
        )
    finally:
        owner.kill()
        owner.wait()
        for pid in pids:  # should this test fail, leave nothing running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_missing_setpriv_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "setpriv" else real_which(name)
    )
    processes._setpriv.cache_clear()  # looked up again, through the patched which
    request.addfinalizer(processes._setpriv.cache_clear)  # and again after this test
    caplog.set_level(logging.WARNING, logger=processes.__name__)
    children = [ManagedProcess(f"true-{i}", ["true"], tmp_path / f"{i}.log") for i in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.stop()
    warnings = [r.getMessage() for r in caplog.records if "setpriv" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "no parent-death signal" in warnings[0]
