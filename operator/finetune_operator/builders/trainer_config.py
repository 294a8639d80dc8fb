"""The trainer's config file, as the operator writes it from a FineTuneJob's spec.

It travels in the Job's pod template, as an annotation the pod mounts as a file through
the downward API (builders/volumes.py): the Job is the only child, so there is no second
object to create per FineTuneJob, to keep in step with the Job, or for anyone to plant
under the child's name.
"""

from __future__ import annotations

import hashlib

import yaml

from finetune_api.config import TrainerConfig
from finetune_api.spec import FineTuneJobSpec

from ..naming import default_output_path
from .owner import Owner


def resolved_trainer_config(spec: FineTuneJobSpec, owner: Owner) -> TrainerConfig:
    """The trainer config with the operator's defaults filled in: a PVC output without a path
    gets a directory unique to this FineTuneJob."""
    config = spec.trainer_config()
    pvc = config.output.pvc
    if pvc is not None and pvc.path is None:
        path = default_output_path(owner.namespace, owner.name, owner.uid)
        output = config.output.model_copy(update={"pvc": pvc.model_copy(update={"path": path})})
        config = config.model_copy(update={"output": output})
    return config


def config_file_text(config: TrainerConfig) -> str:
    """The canonical config file: marked (``apiVersion``/``kind``), camelCase keys only, so
    the trainer reads every field one way and applies none of the original example's
    legacy renames (contract.TRAINER_CONFIG_MARKER)."""
    header = "# Trainer config written by finetune-operator from the FineTuneJob's spec.\n"
    return header + yaml.dump(config.to_marked_wire(), Dumper=_DUMPER, sort_keys=False)


# libyaml's emitter writes the same text as PyYAML's own, several times faster (a test
# holds them equal); PyYAML built without libyaml falls back to its own.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
