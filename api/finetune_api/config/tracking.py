"""Experiment tracking: where a run's parameters, per-step metrics and adapter are reported
besides the FineTuneJob's status (``training.reportTo``, ``training.mlflow``,
``training.wandb``).

Tracking is bookkeeping: none of it changes what is trained, so none of it counts in the
config's fingerprint, and a tracking server that fails never fails the run. Credentials are
referenced, never copied: the operator maps each reference to the environment variable the
tracking library reads (``valueFrom.secretKeyRef``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .base import EndpointUrl, K8sKey, K8sName, ShortString, SpecModel, cel
from .sources import SecretKeyRef

Reporter = Literal["tensorboard", "mlflow", "wandb"]

# What W&B accepts as a project or entity name (letters, digits, '-', '_', '.'), bounded.
WandbName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][-._A-Za-z0-9]*$")
]


class MlflowCredentialsRef(SpecModel):
    """A Secret holding the credentials of an MLflow tracking server: a token, or a user
    name and password (HTTP basic auth). The operator never reads it; the trainer pod gets
    them as MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.tokenKey) != (has(self.usernameKey) && has(self.passwordKey))",
                    "set tokenKey, or usernameKey and passwordKey (not both kinds)",
                ),
                cel(
                    "has(self.usernameKey) == has(self.passwordKey)",
                    "set usernameKey and passwordKey together",
                ),
            ]
        }
    }

    name: K8sName = Field(description="Name of the Secret with the MLflow credentials.")
    token_key: K8sKey | None = Field(
        None, description="Key of a bearer token (MLFLOW_TRACKING_TOKEN)."
    )
    username_key: K8sKey | None = Field(
        None, description="Key of the user name for basic auth (MLFLOW_TRACKING_USERNAME)."
    )
    password_key: K8sKey | None = Field(
        None, description="Key of the password for basic auth (MLFLOW_TRACKING_PASSWORD)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> MlflowCredentialsRef:
        if (self.username_key is None) != (self.password_key is None):
            raise ValueError(
                "set training.mlflow.credentialsSecretRef.usernameKey and passwordKey together"
            )
        if (self.token_key is None) == (self.username_key is None):
            raise ValueError(
                "set training.mlflow.credentialsSecretRef.tokenKey, or usernameKey and "
                "passwordKey (not both kinds)"
            )
        return self


class MlflowSpec(SpecModel):
    """An MLflow tracking server. The run is named after the FineTuneJob
    (``<namespace>/<name>``) and tagged with its namespace, name and uid; a retried pod
    continues the same run. Its id is reported in ``status.tracking.mlflowRunId`` once the
    trainer exits."""

    tracking_uri: EndpointUrl = Field(
        description="http(s) URL of the tracking server, e.g. http://mlflow.mlflow:5000. "
        "The cluster's policy decides which hosts FineTuneJobs may name."
    )
    experiment: ShortString | None = Field(
        None,
        description="Experiment the run goes into, created if missing. Default: the "
        "FineTuneJob's namespace.",
    )
    credentials_secret_ref: MlflowCredentialsRef | None = Field(
        None, description="Secret with a token or basic-auth credentials. Empty: none."
    )


class WandbSpec(SpecModel):
    """Weights & Biases. Without ``apiKeySecretRef`` the run is recorded offline, in
    ``wandb/`` beside the checkpoints, for ``wandb sync`` later."""

    project: WandbName | None = Field(
        None, description="W&B project. Default: the FineTuneJob's namespace."
    )
    entity: WandbName | None = Field(
        None, description="W&B entity (user or team). Default: the API key's default entity."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the W&B API key (WANDB_API_KEY). Empty: offline mode.",
    )


ReportTo = Annotated[list[Reporter], Field(max_length=3)]

# The rules TrainingSpec carries for these fields, as CEL at admission.
TRACKING_RULES = [
    cel(
        "!has(self.reportTo) || self.reportTo.all(r, self.reportTo.exists_one(s, s == r))",
        "training.reportTo lists a tracker twice; list each once",
    ),
    cel(
        "!has(self.reportTo) || !('mlflow' in self.reportTo) || has(self.mlflow)",
        "training.reportTo has mlflow: set training.mlflow.trackingUri",
    ),
    cel(
        "!has(self.mlflow) || (has(self.reportTo) && 'mlflow' in self.reportTo)",
        "training.mlflow is set but training.reportTo does not list mlflow; add it or remove "
        "training.mlflow",
    ),
    cel(
        "!has(self.wandb) || (has(self.reportTo) && 'wandb' in self.reportTo)",
        "training.wandb is set but training.reportTo does not list wandb; add it or remove "
        "training.wandb",
    ),
]


def tracking_problem(
    report_to: list[Reporter] | None, mlflow: MlflowSpec | None, wandb: WandbSpec | None
) -> str | None:
    """The pydantic side of ``TRACKING_RULES``: why these settings disagree, or None."""
    listed = report_to or []
    if len(set(listed)) != len(listed):
        return "training.reportTo lists a tracker twice; list each once"
    if "mlflow" in listed and mlflow is None:
        return "training.reportTo has mlflow: set training.mlflow.trackingUri"
    if mlflow is not None and "mlflow" not in listed:
        return (
            "training.mlflow is set but training.reportTo does not list mlflow; add it or "
            "remove training.mlflow"
        )
    if wandb is not None and "wandb" not in listed:
        return (
            "training.wandb is set but training.reportTo does not list wandb; add it or "
            "remove training.wandb"
        )
    return None


# Keys of TrainingSpec's wire form that only say where a run is reported: left out of the
# config's fingerprint.
TRACKING_KEYS = ("reportTo", "mlflow", "wandb")
