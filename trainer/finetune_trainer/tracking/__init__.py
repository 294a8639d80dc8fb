"""Experiment tracking (``training.reportTo``): TensorBoard event files beside the
checkpoints, an MLflow run, a W&B run (offline without an API key).

Tracking is bookkeeping, never a reason to stop training: every tracker runs behind a guard
that logs a failure once (bounded) and turns that tracker off for the rest of the run, and
every MLflow request has a timeout and a bounded number of retries (mlflow_run.py)."""

from .run_tracking import RunTracking

__all__ = ["RunTracking"]
