"""The ConfigMap holding the trainer's config file."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from finetune_trainer import contract
from finetune_trainer.config import TrainerConfig

from ..api.spec import FineTuneJobSpec
from ..naming import ANNOTATION_CONFIG_HASH, default_output_path
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
    return header + yaml.safe_dump(config.to_marked_wire(), sort_keys=False)


def build_config_map(spec: FineTuneJobSpec, owner: Owner) -> dict[str, Any]:
    text = config_file_text(resolved_trainer_config(spec, owner))
    metadata = owner.metadata()
    metadata["annotations"] = {ANNOTATION_CONFIG_HASH: config_hash(text)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        # Immutable: the training config never changes under a running Job, and kubelets
        # need not watch it.
        "immutable": True,
        "data": {contract.CONFIG_FILE: text},
    }


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
