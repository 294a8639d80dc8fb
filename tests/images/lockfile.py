"""Reading requirements/*.txt lock files, and resolving them with pip for an image."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def _lock_tool() -> ModuleType:
    """hack/images/lock.py, which writes the locks: the tests resolve them as it does."""
    spec = importlib.util.spec_from_file_location("images_lock", REPO / "hack/images/lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


LOCK_TOOL = _lock_tool()


def locked_versions(lock: Path, python: str) -> dict[str, Version]:
    """name -> pinned version in ``lock``, for CPython ``python``."""
    pins = {}
    for line in lock.read_text().splitlines():
        if line.startswith((" ", "#")) or "==" not in line:
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker and not requirement.marker.evaluate({"python_version": python}):
            continue
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def resolve_lock(
    lock: Path, interpreter: str, python: str, report: Path
) -> list[dict[str, object]]:
    """pip's resolution of ``lock`` (hash-checked) for CPython ``python`` on manylinux
    x86_64, run under ``interpreter`` so dependency markers are evaluated for that Python.
    Only metadata is fetched, never the wheels."""
    command = LOCK_TOOL.pip_dry_run(interpreter, python, lock, report, "--require-hashes")
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    installs: list[dict[str, object]] = json.loads(report.read_text())["install"]
    return installs
