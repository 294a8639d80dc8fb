"""The batch/v1 Job that runs the trainer."""

from __future__ import annotations

from typing import Any

from finetune_api import contract
from finetune_api.contract import ExitCode
from finetune_api.spec import FineTuneJobSpec, LifecycleSpec

from ..config import OperatorConfig
from ..naming import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_TRAINER_CONFIG,
    LABEL_KUEUE_QUEUE,
    TRAINER_CONTAINER,
)
from .env import build_env
from .owner import Owner
from .trainer_config import config_file_text, config_hash, resolved_trainer_config
from .volumes import build_storage


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            # Preemption, eviction, node drain: not the trainer's fault, so not a retry.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            # Bad config or bad data: retrying cannot fix it.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [int(ExitCode.INVALID_INPUT)],
                },
            },
        ]
    }


def _resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.gpus:
        limits[res.gpu_resource_name] = str(res.gpus)
    if res.cpu is not None:
        requests["cpu"] = res.cpu
    if res.memory is not None:
        requests["memory"] = limits["memory"] = res.memory
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _tolerations(spec: FineTuneJobSpec, settings: OperatorConfig) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in settings.default_tolerations]
    if spec.resources.gpus:
        # GPU node pools are commonly tainted with the GPU resource name.
        tolerations.append(
            {"key": spec.resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}
        )
    for toleration in spec.scheduling.tolerations or []:
        tolerations.append(toleration.to_wire())
    return tolerations


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context(settings: OperatorConfig) -> dict[str, Any]:
    uid = settings.trainer_uid
    context: dict[str, Any] = {"runAsNonRoot": True}
    if uid is not None:  # None: the platform (OpenShift's restricted-v2) assigns them
        context |= {
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def build_job(spec: FineTuneJobSpec, owner: Owner, settings: OperatorConfig) -> dict[str, Any]:
    """The trainer Job for a valid spec."""
    config = resolved_trainer_config(spec, owner)
    config_text = config_file_text(config)
    storage = build_storage(spec)
    extra_labels = {}
    if spec.scheduling.queue_name:
        extra_labels[LABEL_KUEUE_QUEUE] = spec.scheduling.queue_name
    metadata = owner.metadata(extra_labels)
    metadata["annotations"] = {ANNOTATION_CONFIG_HASH: config_hash(config_text)}

    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        # argv, never a shell: nothing from the spec is interpolated into a command line.
        "command": ["finetune-train", "--config", contract.CONFIG_PATH],
        "workingDir": contract.SCRATCH_DIR,
        "env": build_env(
            config,
            run_id=owner.uid,
            grace_period_seconds=settings.trainer_grace_period_seconds,
            namespace=owner.namespace,
            name=owner.name,
            log_format=settings.trainer_log_format,
        ),
        "ports": [{"name": contract.METRICS_PORT_NAME, "containerPort": contract.METRICS_PORT}],
        "resources": _resources(spec),
        "volumeMounts": storage.mounts,
        "securityContext": _container_security_context(),
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        # A crash before the trainer writes its message still leaves the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.trainer_grace_period_seconds,
        "securityContext": _pod_security_context(settings),
        "containers": [container],
        "volumes": storage.volumes,
        "tolerations": _tolerations(spec, settings),
    }
    service_account = spec.service_account_name or settings.trainer_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    node_selector = {**settings.default_node_selector, **(spec.scheduling.node_selector or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if spec.scheduling.affinity:
        pod_spec["affinity"] = spec.scheduling.affinity
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]

    job_spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": _pod_failure_policy(),
        # Start a replacement only once the old pod is gone, so two trainers never write
        # the same checkpoints.
        "podReplacementPolicy": "Failed",
        "template": {
            "metadata": {
                "labels": dict(metadata["labels"]),
                # Mounted at contract.CONFIG_PATH (builders/volumes.py): the config is part
                # of the pod template, as immutable as the rest of it.
                "annotations": {ANNOTATION_TRAINER_CONFIG: config_text},
            },
            "spec": pod_spec,
        },
    }
    queued = bool(spec.scheduling.queue_name)
    for key, value in lifecycle_patch(
        spec.lifecycle, queued=queued, outcome_recorded=False
    ).items():
        if value is not None:
            job_spec[key] = value
    if queued:
        # Kueue admits a queued Job by unsuspending it.
        job_spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def lifecycle_patch(
    lifecycle: LifecycleSpec, *, queued: bool, outcome_recorded: bool
) -> dict[str, Any]:
    """A merge patch of the Job spec fields that follow spec.lifecycle while the Job exists
    (None removes a field). For a Job in a Kueue queue, suspension belongs to Kueue: the
    user can still suspend it, and unsuspending hands it back to Kueue's admission.

    ttlSecondsAfterFinished goes on the Job only once the FineTuneJob's status holds the
    outcome (``outcome_recorded``): with it on from the start, a short TTL could delete the
    finished Job before the operator saw how it ended."""
    patch: dict[str, Any] = {
        "backoffLimit": lifecycle.backoff_limit,
        "activeDeadlineSeconds": lifecycle.active_deadline_seconds,
        "ttlSecondsAfterFinished": lifecycle.ttl_seconds_after_finished
        if outcome_recorded
        else None,
    }
    if lifecycle.suspend or not queued:
        patch["suspend"] = lifecycle.suspend
    return patch
