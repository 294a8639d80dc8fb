"""Running the trainer's CLI in a subprocess, as the container does, for the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from finetune_api.contract import TerminationMessage

REPO = Path(__file__).resolve().parents[3]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no inherited FTO_* or S3 settings, metrics off, a private
    termination-message file and scratch directory, offline Hugging Face libraries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTO_", "AWS_"))}
    env.update(
        {
            "FTO_TERMINATION_LOG": str(tmp_path / "termination-log"),
            "FTO_METRICS_PORT": "0",
            "FTO_SCRATCH_DIR": str(tmp_path / "scratch"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf-home"),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "2",
        }
    )
    env.update(extra)
    return env


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli_command(*args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "finetune_trainer.cli", *args]


def run_cli(
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float = 300,
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args, python_flags=python_flags),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def termination(tmp_path: Path) -> TerminationMessage:
    text = (tmp_path / "termination-log").read_text(encoding="utf-8")
    message = TerminationMessage.decode(text)
    assert message is not None, f"not a termination message: {text!r}"
    return message


def json_records(stdout: str) -> list[dict[str, Any]]:
    """The per-step JSON lines the trainer prints on stdout."""
    records = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"step"' in line:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
