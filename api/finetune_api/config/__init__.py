"""The shared, typed configuration schema (pydantic only).

Used by the trainer to read its config file, by the operator inside the FineTuneJob spec,
and by the CRD generator. Importing it must stay cheap: no torch, no Kubernetes.
"""

from .base import SpecModel
from .dataset import DEFAULT_DATASET, DatasetSpec
from .errors import describe_errors, field_path
from .eval_data import EarlyStoppingSpec, EvalDataSpec
from .lora import DEFAULT_TARGET_MODULES, LoraSpec
from .model import DEFAULT_MODEL, MAX_SEQ_LENGTH_LIMIT, ModelSpec
from .output import OutputSpec
from .sources import ConfigMapKey, PvcPath, S3CredentialsRef, S3Location, SecretKeyRef
from .tracking import MlflowCredentialsRef, MlflowSpec, Reporter, WandbSpec
from .trainer_config import TrainerConfig
from .training import TrainingSpec

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_MODEL",
    "DEFAULT_TARGET_MODULES",
    "MAX_SEQ_LENGTH_LIMIT",
    "ConfigMapKey",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "EvalDataSpec",
    "LoraSpec",
    "MlflowCredentialsRef",
    "MlflowSpec",
    "ModelSpec",
    "OutputSpec",
    "PvcPath",
    "Reporter",
    "S3CredentialsRef",
    "S3Location",
    "SecretKeyRef",
    "SpecModel",
    "TrainerConfig",
    "TrainingSpec",
    "WandbSpec",
    "describe_errors",
    "field_path",
]
