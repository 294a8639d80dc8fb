"""The objects a spec names that the operator may read: the dataset ConfigMap (and its key)
and the PersistentVolumeClaims of model, dataset and output, each read by name.

Checked before the Job is created: a pod that names a missing one binds to a node, takes
its GPU and waits there for as long as the object is missing. Secrets are not among them:
the operator has no access to Secrets and should have none (startup.py handles those once
the kubelet says so)."""

from __future__ import annotations

from dataclasses import dataclass

from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import Reason

from .kube import Kube

# What a missing object's message ends with: before the Job exists, and once it does.
BEFORE_JOB = "the trainer Job is created once it exists"
AFTER_JOB = "the trainer starts once it exists"


@dataclass(frozen=True)
class MissingReference:
    """Why the Job is held back: the status's reason, and a message that names the spec
    field, the object and its namespace, and the fix."""

    reason: Reason
    message: str


def claim_fields(spec: FineTuneJobSpec) -> list[tuple[str, str]]:
    """(spec field, claim name) of every PersistentVolumeClaim the spec names, in order."""
    fields = []
    for part, source in (
        ("model", spec.model.pvc),
        ("dataset", spec.dataset.pvc),
        ("output", spec.output.pvc),
        ("dataset.eval", spec.dataset.eval.pvc if spec.dataset.eval is not None else None),
    ):
        if source is not None:
            fields.append((f"spec.{part}.pvc.claimName", source.claim_name))
    return fields


def dataset_config_map_problem(
    spec: FineTuneJobSpec, namespace: str, kube: Kube, then: str
) -> str | None:
    """Why dataset.configMap or dataset.eval.configMap cannot be mounted (the ConfigMap or
    its key is missing), or None. ``then`` says what happens once it is fixed."""
    for field, source in spec.dataset.config_maps:
        found = kube.get_config_map(namespace, source.name)
        if found is None:
            return (
                f"spec.{field}.name: ConfigMap {source.name} does not exist in namespace "
                f"{namespace}; create it ({then})"
            )
        keys = sorted({*(found.get("data") or {}), *(found.get("binaryData") or {})})
        if source.key not in keys:
            return (
                f"spec.{field}.key: ConfigMap {source.name} in namespace {namespace} has "
                f"no key {source.key} (its keys: {', '.join(keys) or 'none'}); add it ({then})"
            )
    return None


def missing_reference(spec: FineTuneJobSpec, namespace: str, kube: Kube) -> MissingReference | None:
    """The first object the spec names that is not there, or None when all are."""
    problem = dataset_config_map_problem(spec, namespace, kube, BEFORE_JOB)
    if problem:
        return MissingReference(Reason.DATASET_CONFIG_MAP_MISSING, problem)
    for field, claim in claim_fields(spec):
        if kube.get_persistent_volume_claim(namespace, claim) is None:
            return MissingReference(
                Reason.REFERENCE_NOT_FOUND,
                f"{field}: PersistentVolumeClaim {claim} does not exist in namespace "
                f"{namespace}; create it, or re-create the FineTuneJob naming an existing "
                f"claim ({BEFORE_JOB})",
            )
    return None
