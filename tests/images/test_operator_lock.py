"""What the operator image installs, installed the same way into a fresh virtualenv: the
hash-checked lock file, then the project's wheel without dependencies. No Docker engine
runs here, so this is the proof that the image's Python environment works and holds no
torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "operator.txt"
BUILD_LOCK = REPO / "requirements" / "build.txt"


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _new_venv(path: Path) -> list[str]:
    """A fresh virtualenv (no packages at all); returns a pip command that installs into it.

    This environment's pip drives the install (`pip --python`), which saves bootstrapping
    pip into every throwaway environment."""
    venv.create(path, with_pip=False)
    return [
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--python",
        str(path / "bin" / "python"),
    ]


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv built like the operator image's /opt/venv."""
    root = tmp_path_factory.mktemp("operator-image")
    # The image's `wheel` stage: the project's wheel, built with the locked build tools.
    build_pip = _new_venv(root / "build")
    _run([*build_pip, "install", "--quiet", "--require-hashes", "-r", str(BUILD_LOCK)])
    wheels = root / "wheels"
    _run(
        [
            *build_pip,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(REPO),
        ]
    )
    # The runtime stage's two install steps; the pip cache makes re-runs fast.
    env_dir = root / "venv"
    pip = _new_venv(env_dir)
    # --no-compile: the image compiles bytecode at build time; the test needs no .pyc files.
    _run([*pip, "install", "--quiet", "--no-compile", "--require-hashes", "-r", str(LOCK)])
    (wheel,) = wheels.glob("finetune_operator-*.whl")
    _run([*pip, "install", "--quiet", "--no-compile", "--no-deps", str(wheel)])
    return env_dir


def _clean_env(env_dir: Path) -> dict[str, str]:
    """No PYTHONPATH or project venv leaking in: only the fresh virtualenv is visible."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{env_dir / 'bin'}:/usr/bin:/bin"
    return env


@pytest.mark.slow
def test_the_locked_environment_runs_the_operator(operator_venv: Path, tmp_path: Path) -> None:
    env = _clean_env(operator_venv)
    help_text = _run(
        [str(operator_venv / "bin" / "finetune-operator"), "--help"], env=env, cwd=tmp_path
    ).stdout
    assert "FTO_" in help_text and "--namespace" in help_text
    probe = (
        "import importlib.util as u\n"
        "import finetune_operator.runner, finetune_operator.handlers\n"
        "from finetune_operator.runner import EmbeddedOperator\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth', 'datasets',"
        " 'boto3') if u.find_spec(m) is not None]\n"
        "print('heavy:', heavy)\n"
        "print('from', finetune_operator.runner.__file__)\n"
    )
    out = _run([str(operator_venv / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path).stdout
    assert "heavy: []" in out
    assert str(operator_venv) in out  # imported from the fresh venv, not the checkout


@pytest.mark.slow
def test_the_locked_environment_is_consistent(operator_venv: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--python", str(operator_venv / "bin" / "python")]
    _run([*pip, "check"])
    freeze = _run([*pip, "freeze"]).stdout
    # "name==version", or "name @ file:///...whl" for the project's own wheel.
    installed = {
        re.split(r"==| @ ", line)[0].lower().replace("_", "-")
        for line in freeze.splitlines()
        if line.strip()
    }
    locked = {
        line.split("==")[0]
        for line in LOCK.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    # Exactly the lock plus the project itself: nothing was pulled in from elsewhere.
    assert installed == locked | {"finetune-operator"}
