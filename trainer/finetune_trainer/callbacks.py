"""The glue between TRL/transformers' training loop and this trainer: committing each
checkpoint Trainer writes, honouring SIGTERM at a step boundary, publishing metrics, and
printing one JSON line per logging step.

transformers is imported lazily (``make_callbacks``) so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finetune_api.contract import CheckpointRef, TrainerStage

from . import PROCESS_START
from .metrics import METRICS_FILE, MetricsLog, MetricsServer, gpu_memory, gpu_peak_memory
from .run_progress import RunProgress
from .signals import StopRequest
from .storage.checkpoints import checkpoint_name
from .storage.manifest import Manifest, utc_now
from .storage.targets import OutputTarget

log = logging.getLogger(__name__)


class BatchAccounting:
    """Wraps the data collator to count each micro-batch's real (unpadded) tokens and hash
    its token ids. The hashes make the data order observable: a resumed run must feed the
    same batches, step for step, as an uninterrupted one. Trainer pulls the micro-batches
    of an optimizer step in order, so the step's entries are the oldest ones queued (the
    data loader may already have prepared one batch ahead)."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collator = collator
        self._queue: deque[tuple[int, bytes]] = deque()
        self._lock = threading.Lock()

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        digest = hashlib.blake2b(digest_size=8)
        tokens = 0
        for feature in features:
            ids = feature["input_ids"]
            tokens += len(ids)
            digest.update(",".join(str(int(t)) for t in ids).encode())
            digest.update(b";")
        with self._lock:
            self._queue.append((tokens, digest.digest()))
        return self.collator(features)

    def take(self, micro_batches: int) -> tuple[int, list[bytes]]:
        """Tokens and digests of the next ``micro_batches`` micro-batches consumed."""
        tokens, digests = 0, []
        with self._lock:
            for _ in range(min(micro_batches, len(self._queue))):
                count, digest = self._queue.popleft()
                tokens += count
                digests.append(digest)
        return tokens, digests


def combine_digests(digests: Sequence[bytes]) -> str:
    combined = hashlib.blake2b(digest_size=6)
    for digest in digests:
        combined.update(digest)
    return combined.hexdigest()


class RunTracker:
    """State and behaviour behind the Trainer callback (kept free of transformers so it
    can be unit-tested with plain objects)."""

    def __init__(
        self,
        *,
        target: OutputTarget,
        fingerprint: str,
        progress: RunProgress,
        metrics: MetricsServer,
        metrics_log: MetricsLog,
        stop: StopRequest,
        accounting: BatchAccounting | None,
        micro_batches_per_step: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.fingerprint = fingerprint
        self.progress = progress
        self.metrics = metrics
        self.metrics_log = metrics_log
        self.stop = stop
        self.accounting = accounting
        self.micro_batches_per_step = micro_batches_per_step
        self.clock = clock
        self._window_start = clock()
        self._window_tokens = 0
        self._window_digests: list[bytes] = []
        self._window_step_seconds: list[float] = []
        self._last_step_end: float | None = None
        self._save_started: str | None = None
        self._report_lock = threading.Lock()

    def train_begin(self, state: Any) -> None:
        # The plan's count is reported until the loop starts; from then on the loop's own,
        # since it is the one that decides when training stops (a backend that patches the
        # loop may count differently, and progress must never read 25/20).
        planned, looped = self.progress.report.total_steps, int(state.max_steps)
        if planned is not None and planned != looped:
            log.warning(
                "the training loop counts %d optimizer steps, the plan %d; reporting the loop's",
                looped,
                planned,
            )
        self.progress.report.total_steps = looped
        self.progress.report.step = int(state.global_step)
        self.metrics.update(total_steps=looped, step=state.global_step, epoch=state.epoch)
        self._window_start = self._last_step_end = self.clock()

    def step_end(self, state: Any, control: Any) -> None:
        now = self.clock()
        if self._last_step_end is not None:
            self._window_step_seconds.append(now - self._last_step_end)
        self._last_step_end = now
        if self.accounting is not None:
            tokens, digests = self.accounting.take(self.micro_batches_per_step)
            self.metrics.count_tokens(tokens)
            self._window_tokens += tokens
            self._window_digests.extend(digests)
        self.progress.report.step = int(state.global_step)
        self.metrics.update(step=state.global_step, epoch=state.epoch, **gpu_memory())
        if self._stop_here(state, control, "checkpointing first"):
            control.should_save = True
        if control.should_save:
            self._save_started = utc_now()
        self.metrics.stage(_between_steps(control))

    def evaluated(self, control: Any) -> None:
        """An evaluation ended: the checkpoint of this step, if any, comes next."""
        self.metrics.stage(_between_steps(control))

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        if "loss" not in logs:
            if "train_runtime" in logs:
                log.info(
                    "training loop done: %s",
                    {k: v for k, v in logs.items() if isinstance(v, int | float)},
                )
            return
        now = self.clock()
        elapsed = max(now - self._window_start, 1e-9)
        loss = float(logs["loss"])
        learning_rate = _float(logs.get("learning_rate"))
        grad_norm = _float(logs.get("grad_norm"))
        tokens_per_second = round(self._window_tokens / elapsed, 1)
        self.metrics_log.emit(
            {
                "step": int(state.global_step),
                "total_steps": self.progress.report.total_steps,
                "epoch": round(float(state.epoch or 0.0), 4),
                "loss": loss,
                "learning_rate": learning_rate,
                "grad_norm": grad_norm,
                "tokens_per_second": tokens_per_second,
                "tokens": self._window_tokens,
                "data": combine_digests(self._window_digests) if self._window_digests else None,
                # Wall time of the window's optimizer steps (the GPU synchronized at each
                # step end) and since the trainer started: the benchmark's raw numbers.
                "step_seconds": _mean(self._window_step_seconds),
                "elapsed": round(now - PROCESS_START, 3),
                **gpu_peak_memory(),
            }
        )
        self.progress.report.loss = loss
        self.metrics.update(
            loss=loss,
            learning_rate=learning_rate,
            grad_norm=grad_norm,
            tokens_per_second=tokens_per_second,
        )
        self._window_start = now
        self._window_tokens = 0
        self._window_digests = []
        self._window_step_seconds = []

    def on_save(self, state: Any, control: Any, output_dir: Path) -> None:
        """Trainer has written ``<work dir>/checkpoint-<step>``: commit and publish it. The
        checkpoint is reported (status, metric, log) only once it is durable at the output:
        for S3 that is after its upload, which runs in the background."""
        step = int(state.global_step)
        name = checkpoint_name(step)
        written = output_dir / name
        self.metrics_log.write_jsonl(written / METRICS_FILE)
        self.target.ensure_owned()
        manifest = self.target.artifacts.commit(
            written,
            name,
            kind="checkpoint",
            step=step,
            fingerprint=self.fingerprint,
            started_at=self._save_started or utc_now(),
        )
        self.target.published(
            name, manifest, functools.partial(self._checkpoint_durable, name, manifest)
        )
        self.metrics.stage(TrainerStage.TRAINING)
        # A stop requested while this checkpoint was being written: it is the checkpoint
        # the stop asks for, so stop here rather than train a step more and save again.
        self._stop_here(state, control, "the checkpoint just written is the last")

    def _stop_here(self, state: Any, control: Any, why: str) -> bool:
        """End training after this step when a stop was requested and not yet acted on;
        at the last step the run finishes anyway, writing the final adapter."""
        if not self.stop.requested or self.progress.interrupted:
            return False
        if state.global_step >= state.max_steps:
            return False
        log.warning(
            "stopping after step %d on %s: %s", state.global_step, self.stop.signal_name, why
        )
        self.progress.interrupted = True
        control.should_training_stop = True
        return True

    def _checkpoint_durable(self, name: str, manifest: Manifest) -> None:
        """Runs when ``name`` is safe at the output (for S3, in the upload thread)."""
        uri = self.target.uri(name)
        with self._report_lock:
            current = self.progress.checkpoint
            if current is None or current.step <= manifest.step:
                self.progress.checkpoint = CheckpointRef(step=manifest.step, uri=uri)
                self.metrics.checkpointed(manifest.step)
        log.info(
            "%s complete: %d files, %.1f MB, manifest written -> %s",
            name,
            len(manifest.files),
            manifest.total_bytes / 1e6,
            uri,
        )


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _between_steps(control: Any) -> TrainerStage:
    """What Trainer does after this step, in its order (log, evaluate, save); each is a
    stage of its own, so an evaluation or a save longer than a step is not a stall."""
    if getattr(control, "should_evaluate", False):
        return TrainerStage.EVALUATING
    return TrainerStage.SAVING if control.should_save else TrainerStage.TRAINING


def make_callbacks(tracker: RunTracker, *, progress_bar: bool = False) -> list[Any]:
    """The TrainerCallback that forwards to ``tracker`` and, with ``progress_bar`` (stderr
    is a terminal), a progress bar that leaves stdout to the JSON records (the stock one
    also prints each log dict there)."""
    import torch
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    cuda = torch.cuda.is_available()

    def sync() -> None:
        # Step times must include the GPU work queued for the step, not just its launch.
        if cuda:
            torch.cuda.synchronize()

    class _RunCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            tracker.train_begin(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            tracker.step_end(state, control)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            tracker.on_log(state, dict(logs or {}))

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            tracker.evaluated(control)  # Trainer has cleared should_evaluate

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            tracker.on_save(state, control, Path(args.output_dir))

    class _QuietProgress(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            return None

    return [_RunCallback(), *([_QuietProgress()] if progress_bar else [])]
