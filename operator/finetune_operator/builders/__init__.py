"""Pure builders: FineTuneJob spec in, Kubernetes object dicts out. No I/O here, so every
detail of what the operator creates is unit-tested without a cluster."""

from .job import build_job, lifecycle_patch
from .owner import Owner
from .trainer_config import resolved_trainer_config

__all__ = ["Owner", "build_job", "lifecycle_patch", "resolved_trainer_config"]
