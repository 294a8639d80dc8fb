"""Resolve where the model and the dataset come from to something a loader can open.

- Hub ids pass through (the loader downloads them with HF_TOKEN).
- ``pvc`` references resolve under the PVC mount root: ``<root>/<claimName>/<path>``, root
  being ``$FTO_PVC_ROOT`` or ``contract.PVC_MOUNT_ROOT``, where the operator mounts claims.
- ``configMap`` references resolve to ``<root>/<name>/<key>`` under the ConfigMap root.
- ``s3`` locations are downloaded into the scratch directory first.
- Local paths are used as they are.

Nothing here imports torch; boto3 is imported only for S3 sources.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finetune_api.config import (
    ConfigMapKey,
    DatasetSpec,
    ModelSpec,
    OutputSpec,
    PvcPath,
    S3Location,
)
from finetune_api.config.output import pvc_uri
from finetune_api.contract import CONFIGMAP_MOUNT_ROOT, PVC_MOUNT_ROOT, Env

from .errors import InvalidDataset, InvalidInput, InvalidModel
from .remote_errors import S3Role, s3_field

log = logging.getLogger(__name__)


def pvc_root() -> Path:
    return Path(os.environ.get(Env.PVC_ROOT) or PVC_MOUNT_ROOT)


def configmap_root() -> Path:
    return Path(os.environ.get(Env.CONFIGMAP_ROOT) or CONFIGMAP_MOUNT_ROOT)


def pvc_local_path(ref: PvcPath) -> Path:
    """Where the operator mounts ``ref`` inside the pod."""
    base = pvc_root() / ref.claim_name
    return base / ref.path if ref.path else base


def configmap_local_path(ref: ConfigMapKey) -> Path:
    return configmap_root() / ref.name / ref.key


@dataclass(frozen=True)
class ModelSource:
    """What to pass to ``from_pretrained``: a Hub id (with revision) or a local directory."""

    name_or_path: str
    revision: str | None
    is_local: bool
    description: str


def _scratch_key(location: S3Location) -> str:
    # Same location, same directory: a restarted container in the same pod reuses the copy.
    return hashlib.sha256(location.uri.encode()).hexdigest()[:12]


def _download(
    location: S3Location, role: S3Role, dest: Path, *, reuse: bool, invalid: type[InvalidInput]
) -> Path:
    """Download ``location`` into ``dest`` with ``role``'s credentials; what only a change
    of the source can fix is raised as ``invalid``, naming the location's field."""
    from .storage.s3 import S3Store, UnsafeKey, download_prefix_or_object

    field = s3_field(role)
    store = S3Store.for_location(location, role)
    log.info("downloading %s into %s", location.uri, dest)
    try:
        return download_prefix_or_object(store, location.prefix, dest, reuse=reuse)
    except FileNotFoundError:
        raise invalid(f"{field}.s3: nothing at {location.uri}; check the URI") from None
    except UnsafeKey as exc:
        raise invalid(
            f"{field}.s3: {exc}; rename or remove that object{exc.hint}, or point "
            f"{field}.s3.uri at a prefix without it"
        ) from None


def resolve_model(spec: ModelSpec, scratch: Path) -> ModelSource:
    """Resolve the model source; a local source that is not there is an InvalidModel."""
    if spec.name is not None:
        return ModelSource(spec.name, spec.revision, False, f"Hub model {spec.name}")
    if spec.path is not None:
        path, what = Path(spec.path).expanduser(), f"model.path {spec.path}"
    elif spec.pvc is not None:
        path, what = pvc_local_path(spec.pvc), f"model.pvc {pvc_uri(spec.pvc)}"
    else:
        assert spec.s3 is not None
        dest = scratch / "model" / _scratch_key(spec.s3)
        path = _download(spec.s3, "model", dest, reuse=True, invalid=InvalidModel)
        what = f"model.s3 {spec.s3.uri}"
    if not path.is_dir():
        raise InvalidModel(
            f"{what}: {path} is not a directory; point it at a saved model "
            "(config.json, weights and tokenizer files)"
        )
    if not (path / "config.json").is_file():
        raise InvalidModel(f"{what}: {path} has no config.json; is this a saved model?")
    # Both are read from this directory; say which is missing before any is loaded.
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise InvalidModel(
            f"{what}: {path} has no tokenizer ({', '.join(_TOKENIZER_FILES)}); save the "
            "tokenizer next to the model (tokenizer.save_pretrained)"
        )
    if not any(next(path.glob(pattern), None) for pattern in _WEIGHT_FILES):
        raise InvalidModel(
            f"{what}: {path} has no weights ({', '.join(_WEIGHT_FILES)}); point it at a "
            "complete saved model (model.save_pretrained)"
        )
    return ModelSource(str(path), None, True, what)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_WEIGHT_FILES = ("*.safetensors", "*.bin")


def resolve_dataset(
    spec: DatasetSpec, scratch: Path, role: Literal["dataset", "eval"] = "dataset"
) -> Path | None:
    """The local file or directory holding the data, or None for a Hub dataset. ``role``
    eval resolves the eval set's own source (data/eval_split.py's eval_source): messages
    name dataset.eval, and an S3 source is read with the eval set's credentials."""
    if spec.name is not None:
        return None
    field = s3_field(role)
    if spec.path is not None:
        path, what = Path(spec.path).expanduser(), f"{field}.path {spec.path}"
    elif spec.pvc is not None:
        path, what = pvc_local_path(spec.pvc), f"{field}.pvc {pvc_uri(spec.pvc)}"
    elif spec.config_map is not None:
        ref = spec.config_map
        path, what = configmap_local_path(ref), f"{field}.configMap {ref.name}/{ref.key}"
    else:
        assert spec.s3 is not None
        dest = scratch / role / _scratch_key(spec.s3)
        path = _download(spec.s3, role, dest, reuse=False, invalid=InvalidDataset)
        what = f"{field}.s3 {spec.s3.uri}"
    if not path.exists():
        raise InvalidDataset(f"{what}: {path} does not exist; check the source")
    return path


def dataset_description(spec: DatasetSpec) -> str:
    """How logs and the plan name the dataset source."""
    if spec.name is not None:
        return f"Hub dataset {spec.name} (split {spec.split})"
    if spec.path is not None:
        return f"dataset.path {spec.path}"
    if spec.pvc is not None:
        return f"dataset.pvc {pvc_uri(spec.pvc)}"
    if spec.config_map is not None:
        return f"dataset.configMap {spec.config_map.name}/{spec.config_map.key}"
    assert spec.s3 is not None
    return f"dataset.s3 {spec.s3.uri}"


def output_description(spec: OutputSpec) -> str:
    if spec.s3 is not None:
        return spec.s3.uri
    if spec.pvc is not None:
        return pvc_uri(spec.pvc)
    return str(Path(spec.path or "outputs").expanduser().resolve())
