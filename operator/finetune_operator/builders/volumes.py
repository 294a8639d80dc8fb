"""Volumes and mounts of the trainer pod.

The trainer's config file comes from the pod's own annotation (downward API). The trainer
resolves ``pvc:`` and ``configMap:`` sources under fixed roots from the contract, so each
referenced claim or ConfigMap (dataset's and the eval set's) is mounted once at
``<root>/<name>``.
A claim used for the output is mounted read-write; claims used only for inputs honour
their ``readOnly`` (default true).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_api import contract
from finetune_api.config import TrainerConfig
from finetune_api.spec import FineTuneJobSpec

from ..naming import ANNOTATION_TRAINER_CONFIG


@dataclass(frozen=True)
class PodStorage:
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]


def _claims(config: TrainerConfig) -> dict[str, bool]:
    """claimName -> read-only?, over every PVC the config references."""
    claims: dict[str, bool] = {}
    evaluated = config.dataset.eval.pvc if config.dataset.eval is not None else None
    for source in (config.model.pvc, config.dataset.pvc, evaluated):
        if source is not None:
            claims[source.claim_name] = claims.get(source.claim_name, True) and source.read_only
    if config.output.pvc is not None:
        claims[config.output.pvc.claim_name] = False
    return claims


def _volume_name(prefix: str, index: int) -> str:
    # Volume names must be DNS labels (63 chars); claim names may be longer, so index them.
    return f"{prefix}-{index}"


def build_storage(spec: FineTuneJobSpec) -> PodStorage:
    config = spec.trainer_config()
    # The config file is the pod's own annotation (builders/job.py), as a file.
    config_file = {
        "path": contract.CONFIG_FILE,
        "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_TRAINER_CONFIG}']"},
    }
    volumes: list[dict[str, Any]] = [
        {"name": "config", "downwardAPI": {"items": [config_file]}},
        # Writable scratch: Hub cache, compiled kernels, S3 staging. The root filesystem
        # stays read-only.
        {"name": "scratch", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "dshm",
            "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory},
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": contract.SCRATCH_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    for index, (claim, read_only) in enumerate(sorted(_claims(config).items())):
        name = _volume_name("pvc", index)
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        )
        mounts.append(
            {
                "name": name,
                "mountPath": f"{contract.PVC_MOUNT_ROOT}/{claim}",
                "readOnly": read_only,
            }
        )
    for index, (config_map, keys) in enumerate(_config_map_keys(config).items()):
        # The first keeps the name Jobs had before eval sets could come from a ConfigMap.
        name = _volume_name("dataset-configmap", index) if index else "dataset-configmap"
        volumes.append(
            {
                "name": name,
                "configMap": {
                    "name": config_map,
                    "items": [{"key": key, "path": key} for key in keys],
                },
            }
        )
        mounts.append(
            {
                "name": name,
                "mountPath": f"{contract.CONFIGMAP_MOUNT_ROOT}/{config_map}",
                "readOnly": True,
            }
        )
    return PodStorage(volumes=volumes, mounts=mounts)


def _config_map_keys(config: TrainerConfig) -> dict[str, list[str]]:
    """ConfigMap name -> its keys the trainer reads (dataset's, then the eval set's): one
    volume per ConfigMap, since each is mounted at ``<root>/<name>``."""
    keys: dict[str, list[str]] = {}
    for _, source in config.dataset.config_maps:
        listed = keys.setdefault(source.name, [])
        if source.key not in listed:
            listed.append(source.key)
    return keys
