"""status.provenance: what produced a FineTuneJob's adapter. Pure: read from the Job and
its pods as the cache holds them.

Two writers, trusted differently. The operator's own part, recorded as soon as the trainer
runs: the digest of the config file it wrote into the Job (and that config's fingerprint,
the settings that change what is trained) and the image the node reports running
(containerStatuses' imageID). The trainer's part (model revision, data digest, software,
GPU, adapter manifest digest) comes from its termination message when the run ends;
whatever ran in the trainer container wrote it (``spec.image`` can replace the trainer),
so it is copied as the trainer's claims, bounded by the status model, never checked.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import yaml

from finetune_api.config import TrainerConfig
from finetune_api.contract import TrainerProvenance, provenance_digest
from finetune_api.status import ProvenanceStatus

from .naming import ANNOTATION_TRAINER_CONFIG, TRAINER_CONTAINER

_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _config_text(job: dict[str, Any]) -> str | None:
    template = (job.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(ANNOTATION_TRAINER_CONFIG)
    return text if isinstance(text, str) else None


@functools.lru_cache(maxsize=1024)
def config_facts(text: str) -> tuple[str, str | None]:
    """The config file's ``sha256:<hex>`` and its fingerprint (None when the file is not a
    config this operator can read: a Job made by another version)."""
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    try:
        fingerprint: str | None = TrainerConfig.from_mapping(yaml.safe_load(text)).fingerprint()
    except (ValueError, yaml.YAMLError):
        fingerprint = None
    return digest, fingerprint


def _trainer_image(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(image, imageID) of the pod's trainer container, once the node has reported which
    image it runs (imageID is empty until the container is created)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER and status.get("imageID"):
            return str(status.get("image") or ""), str(status["imageID"])
    return None


def operator_provenance(
    job: dict[str, Any], pods: Sequence[dict[str, Any]]
) -> ProvenanceStatus | None:
    """The operator's part: the config of ``job`` and the image of its newest trainer pod
    that has one (the one running, or the last to run); None before any trainer ran."""
    started = [(pod, found) for pod in pods if (found := _trainer_image(pod)) is not None]
    text = _config_text(job)
    if not started or text is None:
        return None
    _newest, (image, image_id) = max(
        started,
        key=lambda found: (
            found[0]["metadata"].get("creationTimestamp") or "",
            found[0]["metadata"].get("name") or "",
        ),
    )
    config_digest, fingerprint = config_facts(text)
    match = _IMAGE_DIGEST.search(image_id)
    fields: dict[str, object] = {
        "config_digest": config_digest,
        "config_fingerprint": fingerprint,
        "image": image,
        "image_id": image_id,
        "image_digest": match.group() if match else None,
    }
    return ProvenanceStatus.model_validate({k: v for k, v in fields.items() if v})


_OPERATOR_FIELDS = frozenset(
    {"config_digest", "config_fingerprint", "image", "image_id", "image_digest", "digest"}
)
# The trainer's fields status.provenance takes (its config fingerprint is not among them:
# the operator's, of the config it wrote, is the one recorded).
_TRAINER_FIELDS = (
    "model_source",
    "model_revision",
    "dataset_source",
    "dataset_digest",
    "dataset_rows",
    "trainer_version",
    "torch_version",
    "transformers_version",
    "peft_version",
    "trl_version",
    "unsloth_version",
    "gpu_model",
    "gpu_count",
    "adapter_manifest_digest",
)


def provenance_status(
    previous: object, ours: ProvenanceStatus | None, trainers: TrainerProvenance | None
) -> ProvenanceStatus | None:
    """status.provenance over ``previous`` (the stored one): the operator's part when it
    has one, the trainer's record when the run has ended with one, and the digest once
    the model revision, the data digest, the config fingerprint and the image are known.
    None when there is nothing new to record."""
    if ours is None and trainers is None:
        return None
    # readable_status has already dropped a stored record the model would refuse.
    stored = ProvenanceStatus.model_validate(previous if isinstance(previous, dict) else {})
    kept = stored.model_dump(exclude_unset=True)
    fields: dict[str, Any] = {}
    # Stored fields of the operator's part that the newest pod no longer gives (a digest
    # its node does not report): written as null once, so the stored record loses them
    # and the next pass finds nothing to write.
    gone: dict[str, None] = {}
    if ours is not None:
        # The operator's part is of the newest trainer pod: none of an older one's stays.
        fields.update(ours.model_dump(exclude_unset=True))
        gone = {k: None for k in kept if k in _OPERATOR_FIELDS and k not in fields}
        kept = {k: v for k, v in kept.items() if k not in _OPERATOR_FIELDS}
    if trainers is not None:
        fields.update(
            {
                name: value
                for name in _TRAINER_FIELDS
                if (value := getattr(trainers, name)) is not None
            }
        )
    # The whole record, stored fields included, so that an unchanged one makes no write.
    status = ProvenanceStatus.model_validate(
        {
            **kept,
            **gone,
            **ProvenanceStatus.model_validate(fields).model_dump(exclude_unset=True),
        }
    )
    image = status.image_digest or status.image_id
    parts = (status.model_revision, status.dataset_digest, status.config_fingerprint, image)
    if all(parts):
        status.digest = provenance_digest(*(str(part) for part in parts))
    elif status.digest is not None:
        status.digest = None  # a part it covered is gone: it no longer says what it did
    return status
