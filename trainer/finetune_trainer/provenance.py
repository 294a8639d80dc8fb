"""The run's provenance record (contract.TrainerProvenance): which model revision and which
rows it trained on, with which config, software and hardware, and which adapter it wrote.
It travels in the termination message (the operator copies it into
status.provenance), and into ``provenance.json`` and the model card beside the adapter.

The digests are of what training actually used, not of names: the rows' token ids and loss
masks after every filter, and a local model's files, so two runs with equal digests read
the same bytes whatever the sources were called."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.config import ModelSpec, TrainerConfig
from finetune_api.config.output import pvc_uri
from finetune_api.contract import TrainerProvenance

from . import __version__
from .sources import ModelSource

if TYPE_CHECKING:
    from .input_pipeline import TrainingInputs
    from .storage.manifest import Manifest

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
PROVENANCE_FORMAT = 1

# The files that make a saved model what it is: its architecture and all its weights
# (safetensors headers alone would match any two fine-tunes of one architecture).
_MODEL_FILES = (
    "config.json",
    "*.safetensors.index.json",
    "*.safetensors",
    "*.bin.index.json",
    "*.bin",
)
_HUB_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Files every Hub model snapshot the trainer loads has one of, to find its commit by.
_SNAPSHOT_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json")
_ROWS_BATCH = 1024
_CHUNK = 4 * 1024 * 1024


def rows_digest(dataset: Any) -> str:
    """``sha256:<hex>`` of the prepared rows in the order they are given to the trainer:
    each row's token ids and loss mask, length-prefixed (so no two row sequences hash
    alike by shifting tokens between rows)."""
    digest = hashlib.sha256()
    columns = dataset.select_columns(["input_ids", "completion_mask"])
    for batch in columns.iter(batch_size=_ROWS_BATCH):
        for ids, mask in zip(batch["input_ids"], batch["completion_mask"], strict=True):
            for values in (ids, mask):
                digest.update(len(values).to_bytes(8, "little"))
                digest.update(array("q", values).tobytes())
    return "sha256:" + digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def local_model_digest(directory: Path) -> str:
    """``sha256:<hex>`` over the names and contents of a saved model's config and weight
    files (those from_pretrained reads), in name order."""
    names = sorted({p.name for pattern in _MODEL_FILES for p in directory.glob(pattern)})
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\0{_file_sha256(directory / name)}\n".encode())
    return "sha256:" + digest.hexdigest()


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit of the snapshot of ``repo`` at ``revision`` in the local Hub cache (the
    one the run loaded); None when it is not there."""
    if revision is not None and _HUB_COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    for name in _SNAPSHOT_FILES:
        found = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(found, str):
            # <cache>/models--org--name/snapshots/<commit>/<file>
            return Path(found).parent.name
    return None


def model_source_id(spec: ModelSpec) -> str:
    """The model as a person names it: the Hub id, or its location."""
    if spec.name is not None:
        return spec.name
    if spec.pvc is not None:
        return pvc_uri(spec.pvc)
    if spec.s3 is not None:
        return spec.s3.uri
    return str(spec.path)


def dataset_source_id(config: TrainerConfig) -> str:
    data = config.dataset
    if data.name is not None:
        return data.name
    if data.pvc is not None:
        return pvc_uri(data.pvc)
    if data.config_map is not None:
        return f"configmap://{data.config_map.name}/{data.config_map.key}"
    if data.s3 is not None:
        return data.s3.uri
    return str(data.path)


def model_revision(spec: ModelSpec, source: ModelSource) -> str | None:
    if source.is_local:
        return local_model_digest(Path(source.name_or_path))
    assert spec.name is not None
    try:
        return hub_commit(spec.name, spec.revision)
    except Exception as exc:  # a record without the commit beats a failed run
        log.warning("could not find the Hub commit of %s: %s", spec.name, exc)
        return None


_LIBRARIES = ("torch", "transformers", "peft", "trl", "unsloth")


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries that shape training (those present)."""
    found = {}
    for name in _LIBRARIES:
        try:
            found[f"{name}_version"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpus() -> tuple[str, int]:
    """The GPU model and how many the trainer sees; ("cpu", 0) without one."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", 0
    return torch.cuda.get_device_name(0), torch.cuda.device_count()


def run_provenance(
    config: TrainerConfig, source: ModelSource, inputs: TrainingInputs
) -> TrainerProvenance:
    """The record as the run starts training: everything but the adapter."""
    gpu_model, gpu_count = gpus()
    return TrainerProvenance.model_validate(
        {
            "model_source": model_source_id(config.model),
            "model_revision": model_revision(config.model, source),
            "dataset_source": dataset_source_id(config),
            "dataset_digest": inputs.rows_digest,
            "dataset_rows": len(inputs.data.dataset),
            "config_fingerprint": config.fingerprint(),
            "trainer_version": __version__,
            **library_versions(),
            "gpu_model": gpu_model,
            "gpu_count": gpu_count,
        }
    )


def manifest_digest(manifest: Manifest) -> str:
    """``sha256:<hex>`` of the manifest as written (manifest.json)."""
    return "sha256:" + hashlib.sha256(manifest.to_json().encode()).hexdigest()


def inputs_digest(record: TrainerProvenance) -> str | None:
    """The trainer's part of the provenance digest (no image: only the operator knows
    which one ran); None while a part is unknown."""
    from finetune_api.contract import provenance_digest

    parts = (record.model_revision, record.dataset_digest, record.config_fingerprint)
    if any(part is None for part in parts):
        return None
    return provenance_digest(*(str(part) for part in parts))


def provenance_document(record: TrainerProvenance) -> dict[str, Any]:
    """What ``provenance.json`` holds: the record (less the adapter manifest's digest,
    which cannot be in a file the manifest lists) and the inputs digest."""
    wire = record.to_wire()
    wire.pop("adapterManifestDigest", None)
    return {"format": PROVENANCE_FORMAT, **wire, "inputsDigest": inputs_digest(record)}


def write_provenance(directory: Path, record: TrainerProvenance) -> None:
    text = json.dumps(provenance_document(record), indent=2, sort_keys=True) + "\n"
    (directory / PROVENANCE_FILE).write_text(text, encoding="utf-8")


_MAX_PROVENANCE_BYTES = 64 * 1024


def written_provenance(directory: Path, manifest: Manifest) -> TrainerProvenance:
    """The record of an adapter an earlier attempt wrote into ``directory``, to report it
    again: its provenance.json where it can be read here (a local output; an S3 output
    only while its staged copy is left), and the digest of its manifest."""
    record = TrainerProvenance()
    path = directory / PROVENANCE_FILE
    try:
        if path.is_file() and path.stat().st_size <= _MAX_PROVENANCE_BYTES:
            record = TrainerProvenance.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("could not read %s: %s", path, exc)
    return record.model_copy(update={"adapter_manifest_digest": manifest_digest(manifest)})
