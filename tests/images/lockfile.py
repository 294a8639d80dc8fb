"""Reading requirements/*.txt lock files, and resolving them with pip for an image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
# Every manylinux tag a glibc 2.39 x86_64 machine accepts (Ubuntu 24.04; Debian 13 has 2.41).
IMAGE_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]


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
    command = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        interpreter,
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--require-hashes",
        "--report",
        str(report),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        "cp" + python.replace(".", ""),
        "--only-binary=:all:",
        "-r",
        str(lock),
    ]
    for platform in IMAGE_PLATFORMS:
        command += ["--platform", platform]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    installs: list[dict[str, object]] = json.loads(report.read_text())["install"]
    return installs
