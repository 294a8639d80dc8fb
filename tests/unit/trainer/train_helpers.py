"""Configs and process control for the CPU training tests (tiny model, tiny dataset)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from finetune_api.contract import TrainerProgress
from finetune_operator.scrape import parse_progress

from .cli_helpers import REPO, cli_command, write_config


def tiny_config(
    model_dir: Path,
    dataset_path: Path,
    output: dict[str, Any] | str,
    **training: Any,
) -> dict[str, Any]:
    """A config that trains the tiny model for a few steps on a few repeated rows (the
    first six of the dataset, of which four fit in 256 tokens: one optimizer step per
    epoch, reshuffled each epoch), with a learning rate high enough for the loss to fall
    visibly in that time."""
    settings: dict[str, Any] = {
        "maxSteps": 12,
        "perDeviceTrainBatchSize": 2,
        "gradientAccumulationSteps": 2,
        "learningRate": 1e-2,
        "warmupSteps": 0,
        "lrSchedulerType": "constant_with_warmup",
        "saveSteps": 4,
        "loggingSteps": 1,
        "seed": 7,
        "optimizer": "adamw_8bit",  # becomes adamw_torch on CPU, as in production configs
    }
    settings.update(training)
    return {
        "model": {"path": str(model_dir), "maxSeqLength": 256},
        "dataset": {"path": str(dataset_path), "maxSamples": 6},
        "lora": {"rank": 8, "alpha": 16},
        "training": settings,
        "output": {"path": output} if isinstance(output, str) else output,
    }


def start_cli(
    config: dict[str, Any], tmp_path: Path, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    path = write_config(tmp_path / f"config-{time.monotonic_ns()}.yaml", config)
    return subprocess.Popen(
        cli_command("--config", str(path), *extra),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def wait_for(predicate: Any, process: subprocess.Popen[str], timeout: float = 240) -> None:
    """Poll ``predicate`` until it holds; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"trainer exited {process.returncode} early:\n{err[-4000:]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    raise AssertionError("timed out waiting for the trainer")


class MetricsPoller:
    """Scrapes the metrics endpoint in the background while a run goes on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[TrainerProgress] = []
        self.raw: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MetricsPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    text = response.read().decode()
                self.raw.append(text)
                self.samples.append(parse_progress(text))
            except OSError:
                pass
            time.sleep(0.05)
