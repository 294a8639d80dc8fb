"""Run-time options that are not part of the training config: where to bind the metrics
endpoint, where scratch files go, which backend to use, the share of GPU memory to plan
for. They come from command-line flags and the contract's environment variables, so the
same config file runs unchanged on a laptop and in a pod."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from finetune_api.contract import SCRATCH_DIR, Env

from .memory_plan import DEFAULT_MEMORY_FRACTION, memory_fraction
from .metrics import metrics_bind_host, metrics_port_from_env

log = logging.getLogger(__name__)

# Where output bound for S3 is staged before upload, under the scratch directory.
OUTPUT_STAGING = "output-staging"

BackendChoice = Literal["auto", "unsloth", "transformers"]

# Kubernetes' default terminationGracePeriodSeconds, assumed when the pod does not say.
DEFAULT_GRACE_PERIOD_SECONDS = 30.0


def grace_period_from_env() -> float:
    """``FTO_GRACE_PERIOD_SECONDS``: the pod's grace period between SIGTERM and SIGKILL."""
    raw = os.environ.get(Env.GRACE_PERIOD_SECONDS, "").strip()
    if not raw:
        return DEFAULT_GRACE_PERIOD_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(
            f"{Env.GRACE_PERIOD_SECONDS}={raw[:40]!r} is not a number of seconds"
        ) from None
    if not seconds >= 0:
        raise ValueError(f"{Env.GRACE_PERIOD_SECONDS} must be 0 or more, not {raw[:40]!r}")
    return seconds


@dataclass
class RuntimeOptions:
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    scratch_dir: Path | None = None
    backend: BackendChoice = "auto"
    gpu_memory_fraction: float = DEFAULT_MEMORY_FRACTION
    hf_token: str | None = field(default=None, repr=False)  # never printed
    # How long after SIGTERM (or a failure) the run may hold its exit for uploads.
    grace_period_seconds: float = DEFAULT_GRACE_PERIOD_SECONDS
    # The temporary directory scratch() made itself, which remove_own_scratch() deletes
    _temporary: Path | None = field(default=None, init=False, repr=False)
    # Set when output staged in scratch could not be published: then scratch is kept.
    keep_scratch: bool = field(default=False, repr=False)

    @classmethod
    def from_env(
        cls,
        *,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
        backend: BackendChoice = "auto",
    ) -> RuntimeOptions:
        """Flags win over the environment; the environment over the contract's defaults."""
        scratch = os.environ.get(Env.SCRATCH_DIR)
        return cls(
            metrics_host=metrics_host or metrics_bind_host(),
            metrics_port=metrics_port if metrics_port is not None else metrics_port_from_env(),
            scratch_dir=Path(scratch) if scratch else None,
            backend=backend,
            gpu_memory_fraction=memory_fraction(),
            hf_token=os.environ.get(Env.HF_TOKEN) or None,
            grace_period_seconds=grace_period_from_env(),
        )

    def scratch(self) -> Path:
        """The writable scratch directory: the option, else the pod's /scratch mount when it
        is writable, else a fresh temporary directory (created once per run)."""
        if self.scratch_dir is None:
            default = Path(SCRATCH_DIR)
            if default.is_dir() and os.access(default, os.W_OK):
                self.scratch_dir = default
            else:
                self.scratch_dir = self._temporary = Path(
                    tempfile.mkdtemp(prefix="finetune-scratch-")
                )
                log.info("scratch: %s (temporary, removed at exit)", self.scratch_dir)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        return self.scratch_dir

    def remove_own_scratch(self) -> None:
        """Delete the temporary scratch directory this run created, so runs outside a pod
        leave nothing behind; a directory the user or the pod provided is left alone. When
        staged output could not be published it is kept (and its place logged): it may
        hold the only copy of a checkpoint."""
        if self._temporary is None:
            return
        if self.keep_scratch:
            log.warning(
                "scratch %s kept: it holds staged output that was not published",
                self._temporary / OUTPUT_STAGING,
            )
            return
        shutil.rmtree(self._temporary, ignore_errors=True)
        self.scratch_dir = self._temporary = None
