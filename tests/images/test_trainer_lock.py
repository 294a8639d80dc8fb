"""requirements/trainer.txt, what the trainer image installs: every pin hashed, and
everything pyproject.toml's trainer and gpu extras ask for pinned (test_lock_resolution.py
proves it closed and installable against PyPI)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .lockfile import locked_versions

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "trainer.txt"
PYTHONS = ("3.11", "3.12")
# The image's Python (Ubuntu 24.04's CPython 3.12).
IMAGE_PYTHON = "3.12"


def locked(python: str) -> dict[str, Version]:
    return locked_versions(LOCK, python)


def test_every_pin_is_hashed() -> None:
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[a-z0-9])", text.split("\n", 5)[-1].strip())
    assert len(entries) > 50
    for entry in entries:
        if entry.startswith("#"):
            continue
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_satisfies_pyprojects_trainer_and_gpu_extras(python: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["trainer"],
        *project["optional-dependencies"]["gpu"],
    ]
    pins = locked(python)
    environment = {
        "python_version": python,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    }
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in the lock for Python {python}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, which does not satisfy {requirement}"
        )


def test_the_gpu_stack_is_the_one_proven_on_the_gpu() -> None:
    """The exact pins of the CUDA path (pyproject's gpu extra and torch)."""
    pins = locked(IMAGE_PYTHON)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in [*project["optional-dependencies"]["gpu"], "torch==2.11.0"]:
        requirement = Requirement(text)
        assert str(requirement.specifier).startswith("=="), f"{text} must be an exact pin"
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])
    # torch 2.11's PyPI wheels for linux x86_64 are CUDA 13 builds.
    assert pins["nvidia-cuda-runtime"].major == 13


def test_the_lock_pins_the_versions_the_gpu_benchmark_ran() -> None:
    """Every package version recorded by a benchmark run in bench/results is the one the
    image installs, so the figures in bench/README.md describe the image users get."""
    pins = locked(IMAGE_PYTHON)
    records = [
        json.loads(line)
        for path in sorted((REPO / "bench" / "results").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    recorded = {(name, version) for r in records for name, version in r["versions"].items()}
    assert {name for name, _ in recorded} >= {"torch", "unsloth", "bitsandbytes", "trl", "peft"}
    for name, version in sorted(recorded):
        assert pins[canonicalize_name(name)] == Version(version), (
            f"bench/results ran {name} {version}; requirements/trainer.txt pins "
            f"{pins[canonicalize_name(name)]}"
        )


def test_no_marker_is_left_unevaluated() -> None:
    for line in LOCK.read_text().splitlines():
        if ";" in line and not line.startswith("#"):
            marker = Marker(line.split(";", 1)[1].rstrip(" \\"))
            assert str(marker).startswith("python_version =="), line
