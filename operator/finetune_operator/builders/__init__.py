"""Pure builders: FineTuneJob spec in, Kubernetes object dicts out. No I/O here, so every
detail of what the operator creates is unit-tested without a cluster."""

from .configmap import build_config_map, resolved_trainer_config
from .job import build_job, lifecycle_patch
from .owner import Owner

__all__ = ["Owner", "build_config_map", "build_job", "lifecycle_patch", "resolved_trainer_config"]
