"""Observability: the Prometheus endpoint the operator polls (exactly the contract's
gauges), the one-JSON-line-per-logging-step stdout log, and the ``metrics.jsonl`` and
loss-curve PNG written next to the final model."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from finetune_api.contract import METRICS_PORT, Env, Metric, TrainerStage

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT_FILE = "loss.png"

_HELP = {
    Metric.STEP: "Optimizer steps completed.",
    Metric.TOTAL_STEPS: "Optimizer steps the run will take.",
    Metric.EPOCH: "Epochs completed (fractional).",
    Metric.LOSS: "Training loss of the last logging window.",
    Metric.LEARNING_RATE: "Learning rate at the last logged step.",
    Metric.GRAD_NORM: "Gradient norm (before clipping) at the last logged step.",
    Metric.TOKENS_PER_SECOND: "Training tokens per second over the last logging window.",
    Metric.GPU_MEMORY_ALLOCATED: "GPU memory allocated by tensors, in bytes.",
    Metric.GPU_MEMORY_RESERVED: "GPU memory reserved by the caching allocator, in bytes.",
    Metric.CHECKPOINT_STEP: "Step of the newest complete checkpoint.",
    Metric.RESUMED_FROM_STEP: "Step of the checkpoint this run resumed from.",
    Metric.EVAL_LOSS: "Loss on the eval set at the last evaluation.",
    Metric.EVAL_MEAN_TOKEN_ACCURACY: "Mean token accuracy on the eval set at the last evaluation.",
    Metric.BEST_EVAL_LOSS: "Lowest eval loss so far.",
}
_STAGE_HELP = "Where the trainer is: 1 for its current stage, 0 for the others."

# Keys of a progress update -> gauge names.
_GAUGE_OF = {
    "step": Metric.STEP,
    "total_steps": Metric.TOTAL_STEPS,
    "epoch": Metric.EPOCH,
    "loss": Metric.LOSS,
    "learning_rate": Metric.LEARNING_RATE,
    "grad_norm": Metric.GRAD_NORM,
    "tokens_per_second": Metric.TOKENS_PER_SECOND,
    "gpu_memory_allocated_bytes": Metric.GPU_MEMORY_ALLOCATED,
    "gpu_memory_reserved_bytes": Metric.GPU_MEMORY_RESERVED,
    "checkpoint_step": Metric.CHECKPOINT_STEP,
    "resumed_from_step": Metric.RESUMED_FROM_STEP,
    "eval_loss": Metric.EVAL_LOSS,
    "eval_mean_token_accuracy": Metric.EVAL_MEAN_TOKEN_ACCURACY,
    "best_eval_loss": Metric.BEST_EVAL_LOSS,
}


def metrics_bind_host() -> str:
    """$FTO_METRICS_HOST, else $POD_IP (the pod's own address), else every interface."""
    return os.environ.get(Env.METRICS_HOST) or os.environ.get(Env.POD_IP) or "0.0.0.0"


def metrics_port_from_env() -> int:
    raw = os.environ.get(Env.METRICS_PORT)
    return int(raw) if raw not in (None, "") else METRICS_PORT


class MetricsServer:
    """The contract's metrics in a registry of their own, served over HTTP: the gauges the
    operator reads, and for dashboards a tokens counter, the newest checkpoint's time, an
    info metric and the process collector's (CPU, memory, open files)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Enum,
            Gauge,
            Info,
            ProcessCollector,
        )

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self._tokens = Counter(
            Metric.TOKENS, "Training tokens processed (padding excluded).", registry=self.registry
        )
        self._last_checkpoint = Gauge(
            Metric.LAST_CHECKPOINT_TIMESTAMP,
            "When the newest complete checkpoint was written (Unix time).",
            registry=self.registry,
        )
        self._info = Info(
            Metric.INFO,
            "What is training: model, backend, trainer version.",
            registry=self.registry,
        )
        self._gauges = {name: Gauge(name, _HELP[name], registry=self.registry) for name in _HELP}
        for gauge in self._gauges.values():
            gauge.set(math.nan)  # "not known yet": the operator skips NaN
        # Starts in the first stage: the trainer downloads what it needs from its start.
        self._stage = Enum(
            Metric.STAGE,
            _STAGE_HELP,
            states=[stage.value for stage in TrainerStage],
            labelnames=(),
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: Any = None
        self.address: tuple[str, int] | None = None

    def start(self, host: str, port: int) -> tuple[str, int] | None:
        """Serve on ``host:port``; port 0 disables the endpoint. Returns the bound address."""
        if port == 0:
            log.info("metrics endpoint disabled (port 0)")
            return None
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.address = (host, int(self._server.server_port))
        log.info("serving metrics on http://%s:%d/metrics", host, self.address[1])
        return self.address

    def update(self, **values: float | int | None) -> None:
        """Set the gauges named by ``values`` (keys as in _GAUGE_OF); None leaves one as is."""
        for key, value in values.items():
            if value is None:
                continue
            self._gauges[_GAUGE_OF[key]].set(float(value))

    def count_tokens(self, tokens: int) -> None:
        self._tokens.inc(max(0, tokens))

    def checkpointed(self, step: int) -> None:
        """A checkpoint of ``step`` is complete at the output, now."""
        self.update(checkpoint_step=step)
        self._last_checkpoint.set_to_current_time()

    def describe(self, *, model: str, backend: str, version: str) -> None:
        self._info.info({"model": model[:200], "backend": backend, "version": version})

    def stage(self, stage: TrainerStage) -> None:
        """Say that the trainer has entered ``stage``; the operator counts a new stage as
        progress, as it does a step."""
        self._stage.state(stage.value)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def gpu_memory() -> dict[str, int | None]:
    """Allocated and reserved CUDA memory, or Nones without a GPU (torch already loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"gpu_memory_allocated_bytes": None, "gpu_memory_reserved_bytes": None}
    return {
        "gpu_memory_allocated_bytes": int(torch.cuda.memory_allocated()),
        "gpu_memory_reserved_bytes": int(torch.cuda.memory_reserved()),
    }


def gpu_peak_memory() -> dict[str, float]:
    """Peak allocated and reserved CUDA memory so far, in GiB (empty without a GPU)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {
        "gpu_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "gpu_peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


def log_gpu_memory_after_load() -> None:
    """Log what the loaded model holds and what loading peaked at, then restart the peak
    counters, so the step records' ``gpu_peak_*`` are training's own: loading and training
    fail apart (a loader that briefly needs more is fixed differently from a micro-batch
    that is too large). Nothing without a GPU."""
    held = gpu_memory()["gpu_memory_allocated_bytes"]
    peak = gpu_peak_memory()
    if held is None or not peak:
        return
    log.info(
        "GPU memory after loading: %.2f GiB held, %.2f GiB peak while loading",
        held / 2**30,
        peak["gpu_peak_allocated_gib"],
    )
    sys.modules["torch"].cuda.reset_peak_memory_stats()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class MetricsLog:
    """The per-logging-step records: printed as one JSON line each on stdout, kept in
    memory, saved into each checkpoint (so a resumed run keeps the whole history) and
    finally into ``final_model/metrics.jsonl`` with the loss-curve PNG."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, record: dict[str, Any]) -> None:
        clean = {k: _clean(v) for k, v in record.items() if v is not None}
        self.records.append(clean)
        self.stream.write(json.dumps(clean, sort_keys=False) + "\n")
        self.stream.flush()

    def restore(self, path: Path, up_to_step: int) -> None:
        """Load the history saved in a checkpoint, dropping anything after its step."""
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= up_to_step:
                self.records.append(record)

    def write_jsonl(self, path: Path) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")


def plot_loss(records: Iterable[dict[str, Any]], path: Path, title: str) -> bool:
    """Draw the training loss (and the eval loss, when evaluated) against step into a PNG;
    False when nothing to plot."""
    records = list(records)
    points = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evaluated = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    steps, losses = zip(*points, strict=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        ax.plot(
            steps, losses, marker="o" if len(points) < 50 else None, linewidth=1.5, label="train"
        )
        if evaluated:
            eval_steps, eval_losses = zip(*evaluated, strict=True)
            ax.plot(eval_steps, eval_losses, marker="s", linewidth=1.5, label="eval")
            ax.legend()
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss" if evaluated else "training loss")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True
