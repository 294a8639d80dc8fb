"""The trackers ``training.reportTo`` lists, set up for one run.

Where their files go (beside the checkpoints, at the output's root: on the PVC or in the
S3 output's staging directory):
- ``tensorboard/``: TensorBoard event files, written as the run logs. A copy goes into
  each checkpoint and into ``final_model`` (``tensorboard/``), so S3 outputs carry them too.
- ``wandb/``: W&B's run directory; with no API key the run is recorded offline there, for
  ``wandb sync`` later.
MLflow is reported to its tracking server (mlflow_run.py).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.contract import Env

from ..run_progress import RunProgress
from ..storage.checkpoints import FINAL_MODEL_DIR, checkpoint_name
from .background import BackgroundSender, call_within
from .guard import TrackerGuard, guarded_callback
from .identity import RunIdentity
from .mlflow_run import MlflowRun

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
# How long the end of a run waits for metrics still on their way to MLflow.
MLFLOW_DRAIN_SECONDS = 60.0
# The adapter's upload at the end (tens of MB for a LoRA adapter), and the run's end: each
# waited for this long at most, so a tracking server cannot hold the run's exit.
MLFLOW_ADAPTER_SECONDS = 300.0
MLFLOW_END_SECONDS = 30.0
WANDB_PARENT_DIR = "."  # W&B makes its own wandb/ below WANDB_DIR


class RunTracking:
    """The run's experiment trackers; nothing at all when ``reportTo`` is empty."""

    def __init__(
        self, config: TrainerConfig, fingerprint: str, root: Path, progress: RunProgress
    ) -> None:
        self.config = config
        self.fingerprint = fingerprint
        self.root = root
        self.progress = progress
        self.reporters = list(config.training.report_to or [])
        fallback = Path(config.output.path or "outputs").name or "run"
        self.identity = RunIdentity.from_env(fallback)
        self.mlflow_guard = TrackerGuard("mlflow")
        self.mlflow: MlflowRun | None = None
        self.mlflow_sender: BackgroundSender | None = None
        self._ended = False

    @property
    def run_name(self) -> str:
        return self.identity.run_name

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / TENSORBOARD_DIR

    def callbacks(self) -> list[Any]:
        """TrainerCallbacks for the SFTTrainer, ahead of the run's own (callbacks.py), so a
        checkpoint gets its copy of the event files before it is committed."""
        callbacks: list[Any] = []
        if "tensorboard" in self.reporters:
            callbacks.append(self._tensorboard())
        if "wandb" in self.reporters:
            callbacks.append(self._wandb())
        if "mlflow" in self.reporters and self.config.training.mlflow is not None:
            spec = self.config.training.mlflow
            self.mlflow = self.mlflow_guard.call(
                "setting up the client", MlflowRun, spec, self.identity
            )
            callbacks.append(_mlflow_callback(self))
        if "tensorboard" in self.reporters:
            callbacks.append(_event_file_copies(self.tensorboard_dir))
        return callbacks

    def _tensorboard(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations.integration_utils import TensorBoardCallback

        self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
        log.info("tensorboard: event files in %s", self.tensorboard_dir)
        callback = TensorBoardCallback(tb_writer=writer)  # type: ignore[no-untyped-call]
        return guarded_callback(callback, TrackerGuard("tensorboard"))

    def _wandb(self) -> Any:
        from transformers.integrations.integration_utils import WandbCallback

        spec = self.config.training.wandb
        settings = {
            "WANDB_DIR": str(self.root),
            "WANDB_PROJECT": (spec.project if spec else None) or self.identity.namespace,
            "WANDB_TAGS": ",".join(
                f"{k}={v}" for k, v in self.identity.tags(self.fingerprint).items()
            ),
            # The trainer's stdout carries its JSON records; W&B must not wrap it.
            "WANDB_CONSOLE": "off",
            "WANDB_SILENT": "true",
            "WANDB_LOG_MODEL": "false",
            "WANDB_WATCH": "false",
            # Bounded network: 60 s to start the run, 15 s per API request, and at the
            # end 60 s to upload what is left (the rest stays in wandb/ for `wandb sync`).
            "WANDB_INIT_TIMEOUT": "60",
            "WANDB_HTTP_TIMEOUT": "15",
            "WANDB_FINISH_TIMEOUT": "60",
        }
        if spec is not None and spec.entity:
            settings["WANDB_ENTITY"] = spec.entity
        if self.identity.uid:
            # A retried pod goes on with the same W&B run.
            settings["WANDB_RUN_ID"] = self.identity.uid
            settings["WANDB_RESUME"] = "allow"
        if not os.environ.get(Env.WANDB_API_KEY):
            settings["WANDB_MODE"] = "offline"
        os.environ.update(settings)
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("wandb: %s run in %s", settings.get("WANDB_MODE", "online"), self.root / "wandb")
        callback = WandbCallback()  # type: ignore[no-untyped-call]
        return guarded_callback(callback, _WandbGuard("wandb"))

    def start_mlflow(self) -> None:
        if self.mlflow is None or self.mlflow.run_id is not None:
            return
        run_id = self.mlflow_guard.call(
            "starting the run", self.mlflow.start, self.config, self.fingerprint
        )
        if run_id:
            self.progress.report.mlflow_run_id = run_id
            self.mlflow_sender = BackgroundSender(self.mlflow_guard)

    def log_mlflow_step(self, step: int, logs: dict[str, Any]) -> None:
        if self.mlflow is not None and self.mlflow_sender is not None:
            self.mlflow_sender.submit("logging metrics", self.mlflow.log_step, step, logs)

    def _drain_mlflow(self) -> None:
        if self.mlflow_sender is not None:
            self.mlflow_sender.drain(MLFLOW_DRAIN_SECONDS)
            self.mlflow_sender = None

    def finish(self, adapter_dir: Path) -> None:
        """The run trained to the end: the adapter logged, the MLflow run ended."""
        self._drain_mlflow()
        if self.mlflow is not None and self.mlflow.run_id is not None:
            call_within(
                self.mlflow_guard,
                MLFLOW_ADAPTER_SECONDS,
                "logging the adapter",
                self.mlflow.log_adapter,
                adapter_dir,
            )
            call_within(
                self.mlflow_guard, MLFLOW_END_SECONDS, "ending the run", self.mlflow.end, "FINISHED"
            )
        self._ended = True

    def close(self, status: str) -> None:
        """Any other exit: the MLflow run ends as ``status`` (FAILED or KILLED)."""
        if self._ended:
            return
        self._ended = True
        self._drain_mlflow()
        if self.mlflow is not None and self.mlflow.run_id is not None:
            call_within(
                self.mlflow_guard, MLFLOW_END_SECONDS, "ending the run", self.mlflow.end, status
            )


# W&B's bound on a tag's length.
_WANDB_TAG_LIMIT = 64


def _wandb_tags(tags: dict[str, str]) -> list[str]:
    return [f"{key}={value}"[:_WANDB_TAG_LIMIT].replace(",", "_") for key, value in tags.items()]


class _WandbGuard(TrackerGuard):
    """W&B's callback leaves the run open at the end of training; it is finished there,
    so its files are complete before the outputs are published."""

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().call(what, fn, *args, **kwargs)
        if what == "on_train_end":
            import wandb

            super().call("finishing the run", wandb.finish)
        return result


def _mlflow_callback(tracking: RunTracking) -> Any:
    from transformers import TrainerCallback

    class _MlflowCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                tracking.start_mlflow()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if state.is_world_process_zero:
                tracking.log_mlflow_step(int(state.global_step), dict(logs or {}))

    return _MlflowCallback()


def _event_file_copies(source: Path) -> Any:
    """Copies the event files into each checkpoint as Trainer writes it, and into the
    final adapter's directory when training ends (before the adapter is saved there)."""
    from transformers import TrainerCallback

    def copy_into(directory: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, directory / TENSORBOARD_DIR, dirs_exist_ok=True)

    guard = TrackerGuard("tensorboard")

    class _EventFileCopies(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            written = Path(args.output_dir) / checkpoint_name(int(state.global_step))
            guard.call("copying event files", copy_into, written)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            guard.call("copying event files", copy_into, Path(args.output_dir) / FINAL_MODEL_DIR)

    return _EventFileCopies()
