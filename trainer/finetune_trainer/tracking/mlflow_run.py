"""The run's MLflow run: its parameters (the training config), a metric per logging step,
and the final adapter as an artifact, through MlflowClient (explicit run ids, no global
"active run").

The run is named ``<namespace>/<name>`` and tagged with the FineTuneJob's namespace, name
and uid; a retried pod of the same FineTuneJob finds its run by the uid tag and goes on
logging into it, so one FineTuneJob is one MLflow run. Every request has a timeout and a
bounded number of retries (``REQUEST_BOUNDS``): a dead server costs the run one bounded
wait, after which the guard turns MLflow off (guard.py)."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finetune_api.config import MlflowSpec, TrainerConfig

from .identity import TAG_UID, RunIdentity

log = logging.getLogger(__name__)

# MLflow's own settings for its HTTP requests (mlflow.environment_variables): 15 s per
# request, 2 retries 1 s and 2 s apart, so one call gives up within about a minute.
REQUEST_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
# Which config sections become parameters; Secret references and outputs say nothing
# about what was trained.
_PARAM_SECTIONS = ("model", "dataset", "lora", "training")
_PARAM_DROPPED = {"tokenSecretRef", "credentialsSecretRef", "reportTo", "mlflow", "wandb"}
# What MLflow accepts in a metric name.
_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. :/]")
ADAPTER_ARTIFACT_PATH = "final_model"


def artifact_store_problem(artifact_uri: str, tracking_uri: str) -> str | None:
    """Why the adapter must not go where the tracking server says its artifacts are, or
    None. The server chooses that place (any scheme MLflow knows: another host over HTTP,
    FTP, S3), and the cluster's policy checked only the tracking URI: the adapter goes only
    through the tracking server itself (``mlflow server --serve-artifacts``:
    ``mlflow-artifacts:`` with no other host)."""
    from urllib.parse import urlsplit

    parts = urlsplit(artifact_uri)
    host = urlsplit(tracking_uri).netloc
    if parts.scheme == "mlflow-artifacts" and parts.netloc in ("", host):
        return None
    shown = artifact_uri if len(artifact_uri) <= 200 else artifact_uri[:200] + "..."
    return (
        f"the tracking server keeps artifacts at {shown!r}, outside the server the policy "
        "admitted; the adapter is uploaded only through the server itself (run it with "
        "--serve-artifacts), so it was not uploaded"
    )


def config_params(config: TrainerConfig, limit: int) -> dict[str, str]:
    """The config as flat ``section.key`` parameters, each value at most ``limit``
    characters (MLflow's bound)."""
    wire = config.to_wire()
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key not in _PARAM_DROPPED:
                    walk(f"{prefix}.{key}", item)
        else:
            params[prefix] = str(value)[:limit]

    for section in _PARAM_SECTIONS:
        walk(section, wire.get(section, {}))
    return params


def step_metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of one Trainer log record, under names MLflow accepts."""
    metrics = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            metrics[_METRIC_NAME.sub("_", key)] = float(value)
    return metrics


class MlflowRun:
    """One FineTuneJob's MLflow run, created or found on :meth:`start`."""

    def __init__(self, spec: MlflowSpec, identity: RunIdentity) -> None:
        for key, value in REQUEST_BOUNDS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        self.spec = spec
        self.identity = identity
        self.client = MlflowClient(tracking_uri=spec.tracking_uri)
        self.run_id: str | None = None

    @property
    def experiment_name(self) -> str:
        return self.spec.experiment or self.identity.namespace

    def start(self, config: TrainerConfig, fingerprint: str) -> str:
        """Create the run (or find this FineTuneJob's), log the config as parameters."""
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        experiment_id = self._experiment_id()
        run_id = self._existing_run(experiment_id)
        if run_id is None:
            run = self.client.create_run(
                experiment_id,
                run_name=self.identity.run_name,
                tags=self.identity.tags(fingerprint),
            )
            run_id = run.info.run_id
            params = config_params(config, MAX_PARAM_VAL_LENGTH)
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[start : start + 100])
        else:
            self.client.update_run(run_id, status="RUNNING")
            log.info("mlflow: continuing run %s of this FineTuneJob", run_id)
        self.run_id = run_id
        log.info(
            "mlflow: run %s in experiment %r at %s",
            run_id,
            self.experiment_name,
            self.spec.tracking_uri,
        )
        return run_id

    def _experiment_id(self) -> str:
        name = self.experiment_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:
            # Created meanwhile by another run.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _existing_run(self, experiment_id: str) -> str | None:
        if not self.identity.uid:
            return None
        uid = self.identity.uid.replace("'", "")
        # The oldest run with the uid: the first attempt made it. A uid is random and known
        # only once the FineTuneJob exists, so a run planted with it by someone else who
        # may write to the experiment comes after that one, and is never taken for it.
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_UID}` = '{uid}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return str(runs[0].info.run_id) if runs else None

    def log_step(self, step: int, logs: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        metrics = step_metrics(logs)
        if self.run_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()]
        )

    def log_adapter(self, adapter_dir: Path) -> None:
        if self.run_id is None:
            return
        where = self.client.get_run(self.run_id).info.artifact_uri or ""
        problem = artifact_store_problem(where, self.spec.tracking_uri)
        if problem:
            raise RuntimeError(problem)
        self.client.log_artifacts(self.run_id, str(adapter_dir), ADAPTER_ARTIFACT_PATH)

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
