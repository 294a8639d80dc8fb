"""Environment of the trainer container. Secrets are only ever referenced
(``valueFrom.secretKeyRef``): the operator never reads a Secret, so it needs no RBAC on
Secrets and no secret value can leak into status, events or logs."""

from __future__ import annotations

from typing import Any, Literal

from finetune_api import contract
from finetune_api.config import S3Location, TrainerConfig

# Caches go to the writable scratch volume; the root filesystem is read-only.
_SCRATCH_ENV = {
    "HOME": contract.SCRATCH_DIR,
    "HF_HOME": f"{contract.SCRATCH_DIR}/huggingface",
    "XDG_CACHE_HOME": f"{contract.SCRATCH_DIR}/cache",
    "TRITON_CACHE_DIR": f"{contract.SCRATCH_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{contract.SCRATCH_DIR}/inductor",
    "MPLCONFIGDIR": f"{contract.SCRATCH_DIR}/matplotlib",
    "TMPDIR": "/tmp",
    "PYTHONUNBUFFERED": "1",
}


def _secret(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _s3_env(
    role: Literal["model", "dataset", "output", "eval"], location: S3Location | None
) -> list[dict[str, Any]]:
    if location is None or location.credentials_secret_ref is None:
        return []
    creds = location.credentials_secret_ref
    env = [
        _secret(contract.Env.s3(role, "ACCESS_KEY_ID"), creds.name, creds.access_key_id_key),
        _secret(
            contract.Env.s3(role, "SECRET_ACCESS_KEY"), creds.name, creds.secret_access_key_key
        ),
    ]
    if creds.session_token_key is not None:
        env.append(
            _secret(contract.Env.s3(role, "SESSION_TOKEN"), creds.name, creds.session_token_key)
        )
    return env


def _tracking_env(config: TrainerConfig, namespace: str, name: str) -> list[dict[str, Any]]:
    """What experiment trackers need: the FineTuneJob's identity (the run's name and tags)
    and each tracker's credentials by reference. Nothing when no tracker is listed, so the
    Jobs of FineTuneJobs without tracking stay what earlier operators made (adoption)."""
    training = config.training
    if not training.report_to:
        return []
    env: list[dict[str, Any]] = [
        {"name": contract.Env.JOB_NAMESPACE, "value": namespace},
        {"name": contract.Env.JOB_NAME, "value": name},
    ]
    mlflow = training.mlflow
    creds = mlflow.credentials_secret_ref if mlflow is not None else None
    if creds is not None:
        if creds.token_key is not None:
            env.append(_secret(contract.Env.MLFLOW_TRACKING_TOKEN, creds.name, creds.token_key))
        if creds.username_key is not None and creds.password_key is not None:
            env.append(
                _secret(contract.Env.MLFLOW_TRACKING_USERNAME, creds.name, creds.username_key)
            )
            env.append(
                _secret(contract.Env.MLFLOW_TRACKING_PASSWORD, creds.name, creds.password_key)
            )
    wandb = training.wandb
    if wandb is not None and wandb.api_key_secret_ref is not None:
        key = wandb.api_key_secret_ref
        env.append(_secret(contract.Env.WANDB_API_KEY, key.name, key.key))
    return env


def build_env(
    config: TrainerConfig,
    *,
    run_id: str,
    grace_period_seconds: int,
    namespace: str = "",
    name: str = "",
    log_format: str = "plain",
) -> list[dict[str, Any]]:
    """The trainer's environment. ``run_id`` (the FineTuneJob's uid) lets the next pod of
    the same FineTuneJob take over the output lease at once, while another FineTuneJob's
    trainer is refused; ``grace_period_seconds`` (the pod's) bounds how long the trainer
    holds its exit for uploads that failed. ``namespace`` and ``name`` (the FineTuneJob's)
    name the run in experiment trackers."""
    env: list[dict[str, Any]] = [
        {"name": contract.Env.POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": contract.Env.METRICS_PORT, "value": str(contract.METRICS_PORT)},
        {"name": contract.Env.TERMINATION_LOG, "value": contract.TERMINATION_MESSAGE_PATH},
        {"name": contract.Env.RUN_ID, "value": run_id},
        {"name": contract.Env.GRACE_PERIOD_SECONDS, "value": str(grace_period_seconds)},
    ]
    env += [{"name": k, "value": v} for k, v in _SCRATCH_ENV.items()]
    if log_format != "plain":  # the trainer's default: Jobs of plain-logging clusters unchanged
        env.append({"name": contract.Env.LOG_FORMAT, "value": log_format})
    token = config.model.token_secret_ref
    if token is not None:
        env.append(_secret(contract.Env.HF_TOKEN, token.name, token.key))
    env += _s3_env("model", config.model.s3)
    env += _s3_env("dataset", config.dataset.s3)
    env += _s3_env("output", config.output.s3)
    env += _s3_env("eval", config.dataset.eval.s3 if config.dataset.eval is not None else None)
    env += _tracking_env(config, namespace, name)
    return env
