"""The FineTuneJob status, written only by the operator.

Typed so the CRD documents it (``kubectl explain finetunejob.status``), so the operator
cannot write a shape the API server would prune, and so every status the operator writes
is built through these models: each string is bounded and made safe (safe_text.py) as the
model takes it, and :meth:`to_wire` is the one way a status becomes the JSON merge patch
the operator sends.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .config.base import (
    MAX_K8S_NAME,
    MAX_LOCAL_PATH,
    MAX_RELATIVE_PATH,
    MAX_S3_URI,
)
from .contract import TrainerStage
from .safe_text import MESSAGE_LIMIT, safe_text


# Where a FineTuneJob's run stands (status.phase). A comment, not a docstring: the CRD
# takes the field's description, and an enum's docstring would come first in its schema.
class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES: frozenset[Phase] = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Reason(enum.StrEnum):
    """The reasons the operator puts in a status or an Event: its own, and those it takes
    over from Kubernetes. The trainer's own are :class:`finetune_api.contract.TrainerReason`.
    A Job condition's reason outside this set is still reported as the Job says it."""

    # The operator's own: on the way to a running trainer.
    CREATING_JOB = "CreatingJob"
    WAITING_FOR_POD = "WaitingForPod"
    CONTAINER_CREATING = "ContainerCreating"
    RUNNING = "Running"
    COMPLETING = "Completing"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    WAITING_FOR_QUEUE = "WaitingForQueue"
    SUCCEEDED = "Succeeded"
    # The operator's own: what it found wrong.
    INVALID_SPEC = "InvalidSpec"
    NOT_ALLOWED = "NotAllowed"
    CHILD_CONFLICT = "ChildConflict"
    JOB_REJECTED = "JobRejected"
    JOB_DELETED = "JobDeleted"
    QUOTA_EXCEEDED = "QuotaExceeded"
    DATASET_CONFIG_MAP_MISSING = "DatasetConfigMapMissing"
    REFERENCE_NOT_FOUND = "ReferenceNotFound"
    STARTUP_FAILED = "StartupFailed"
    STATUS_REJECTED = "StatusRejected"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    # The operator's own: Events only.
    RESTARTED = "Restarted"
    CHECKPOINT = "Checkpoint"
    JOB_CREATED = "JobCreated"
    # From the Job controller's conditions.
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    POD_FAILURE_POLICY = "PodFailurePolicy"
    FAILED_INDEXES = "FailedIndexes"
    MAX_FAILED_INDEXES_EXCEEDED = "MaxFailedIndexesExceeded"
    SUCCESS_POLICY = "SuccessPolicy"
    JOB_FAILED = "JobFailed"
    # From the scheduler's and the kubelet's pod states.
    UNSCHEDULABLE = "Unschedulable"
    SCHEDULER_ERROR = "SchedulerError"
    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    CREATE_CONTAINER_ERROR = "CreateContainerError"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


MAX_TEXT = 32768
# Ours are four; the rest is room for conditions other writers add.
MAX_CONDITIONS = 16
MAX_SHORT = 1024
# A location under the spec's output (pvc://claim/path/..., s3://bucket/prefix/..., or a
# local path) plus what the trainer appends (/checkpoint-N, /final_model, ...). Longer than
# any location the spec accepts, so a status that reports one is never refused.
MAX_URI = (
    max(MAX_LOCAL_PATH, MAX_S3_URI, len("pvc://") + MAX_K8S_NAME + 1 + MAX_RELATIVE_PATH) + 256
)


def _made_safe(limit: int) -> BeforeValidator:
    """Bound a string and escape its control characters before it is checked: text from
    outside the operator (a trainer's message, an API server's refusal) shortens, never
    fails the status."""

    def safe(value: object) -> object:
        return safe_text(value, limit) if isinstance(value, str) else value

    return BeforeValidator(safe)


# The CRD accepts messages of MAX_TEXT; the operator writes at most MESSAGE_LIMIT, so a
# status that carries several of them is still far below what the API server accepts.
Text = Annotated[str, _made_safe(MESSAGE_LIMIT), Field(max_length=MAX_TEXT)]
Short = Annotated[str, _made_safe(MAX_SHORT), Field(max_length=MAX_SHORT)]
Uri = Annotated[str, _made_safe(MAX_URI), Field(max_length=MAX_URI)]
# An RFC 3339 time, which the API server checks as such (format: date-time), and clients
# (kubectl's printer columns, kstatus) read as a time.
Timestamp = Annotated[
    str,
    _made_safe(MAX_SHORT),
    Field(max_length=MAX_SHORT, json_schema_extra={"format": "date-time"}),
]


class _Status(BaseModel):
    # validate_assignment: a field set after construction is made safe as well.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The fields that were set, as the API spells them: the JSON merge patch of a
        status write. A field set to None stays, as null, which removes it from the stored
        status; a field never set is left out, and the stored value stays."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Condition(_Status):
    """A metav1.Condition."""

    type: Short = Field(description="Ready, Reconciling, Stalled, Suspended, Complete or Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Short = Field(description="CamelCase reason for the last transition.")
    message: Text = Field("", description="Human-readable details.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this condition was computed from."
    )
    last_transition_time: Timestamp = Field(
        description="When status last changed (RFC 3339); unchanged while status stays the same."
    )


def loss_display(loss: float | None) -> str | None:
    """``loss`` as a person reads it: four significant digits (1.734, 10.49, 0.8123), in
    exponent form below 0.0001 and from 10000 on (1.235e-05, 1.235e+04). None for no loss,
    NaN or an infinity."""
    if loss is None or not math.isfinite(loss):
        return None
    return f"{loss:.4g}"


def duration_display(seconds: int | None) -> str | None:
    """``seconds`` as a person reads a wait: 3h34m, 12m05s, 45s (days as hours: 50h00m)."""
    if seconds is None or seconds < 0:
        return None
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressStatus(_Status):
    """Live training progress, read from the trainer's metrics endpoint."""

    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    summary: Short | None = Field(None, description="step/totalSteps, for the printer column.")
    epoch: float | None = Field(None, description="Epochs done (fractional).")
    loss: float | None = Field(None, description="Training loss at the last logging step.")
    loss_display: Short | None = Field(
        None,
        description="The loss to four significant digits (1.734, 10.49, 0.8123; exponent "
        "form below 0.0001 and from 10000 on), for the printer column; set with loss.",
    )
    eval_loss: float | None = Field(
        None, description="Loss on dataset.eval at the last evaluation."
    )
    eval_loss_display: Short | None = Field(
        None,
        description="The eval loss to four significant digits, for the printer column; set "
        "with evalLoss.",
    )
    learning_rate: float | None = Field(None, description="Current learning rate.")
    tokens_per_second: float | None = Field(None, description="Training throughput.")
    eta_seconds: int | None = Field(None, description="Estimated seconds to the last step.")
    eta: Short | None = Field(
        None,
        description="etaSeconds as a person reads it (3h34m, 12m05s), for the printer "
        "column; set with etaSeconds.",
    )
    updated_at: Timestamp | None = Field(
        None, description="When this progress was read (RFC 3339)."
    )
    stage: TrainerStage | None = Field(
        None,
        description="Where the trainer is: Downloading, Loading, Compiling (until the first "
        "optimizer step ends), Training or Saving.",
    )


class CheckpointStatus(_Status):
    """The newest complete checkpoint."""

    step: int = Field(description="Optimizer step of the checkpoint.")
    uri: Uri = Field(description="Where it is: pvc://claim/path, s3://bucket/key or a path.")


class OutputStatus(_Status):
    """The trained artifacts."""

    adapter_uri: Uri | None = Field(None, description="The final LoRA adapter (final_model).")
    merged_uri: Uri | None = Field(None, description="The merged 16-bit model, if exported.")
    final_model_step: int | None = Field(
        None, description="The optimizer step whose weights final_model holds."
    )
    final_model_selection: Short | None = Field(
        None,
        description="Why that step (output.keep): e.g. 'best eval loss 1.234 at step 40' or "
        "'last step'.",
    )


class ProvenanceStatus(_Status):
    """What a run was made of. The operator records the config and the image as soon as
    the trainer runs; the rest is the trainer's own record from its termination message
    when the run ends: claims of whatever ran in the trainer container, bounded, not
    facts the operator checked."""

    digest: Short | None = Field(
        None,
        description="sha256 over modelRevision, datasetDigest, configFingerprint and the "
        "image (imageDigest, else imageID): equal digests, the same training. Set once all "
        "four are known.",
    )
    model_source: Short | None = Field(None, description="Hub id, or the model's location.")
    model_revision: Short | None = Field(
        None,
        description="The Hub commit loaded, or sha256:<hex> of a local or S3 model's "
        "config and weight files (trainer's record).",
    )
    dataset_source: Short | None = Field(None, description="Where the rows came from.")
    dataset_digest: Short | None = Field(
        None,
        description="sha256:<hex> of the token ids and loss masks of the prepared training set, "
        "in order, after filtering, truncation and maxSamples (trainer's record).",
    )
    dataset_rows: int | None = Field(
        None, description="Rows of the prepared training set (trainer's record)."
    )
    config_digest: Short | None = Field(
        None, description="sha256:<hex> of the trainer config file the operator wrote."
    )
    config_fingerprint: Short | None = Field(
        None,
        description="The config's settings that change what is trained (output location, "
        "credentials and speed-only settings left out), hashed: the resume fingerprint.",
    )
    image: Short | None = Field(None, description="The trainer container's image.")
    image_id: Short | None = Field(None, description="Its imageID, as the node reports it.")
    image_digest: Short | None = Field(
        None, description="sha256:<hex> from imageID, when the node reports a digest."
    )
    trainer_version: Short | None = Field(None, description="finetune-trainer's version.")
    torch_version: Short | None = Field(None, description="torch's version.")
    transformers_version: Short | None = Field(None, description="transformers' version.")
    peft_version: Short | None = Field(None, description="peft's version.")
    trl_version: Short | None = Field(None, description="trl's version.")
    unsloth_version: Short | None = Field(None, description="unsloth's version, when used.")
    gpu_model: Short | None = Field(None, description="The GPU's name, or cpu.")
    gpu_count: int | None = Field(None, description="GPUs the trainer saw (0 on cpu).")
    adapter_manifest_digest: Short | None = Field(
        None, description="sha256:<hex> of final_model/manifest.json (trainer's record)."
    )


class TrackingStatus(_Status):
    """Where experiment trackers recorded the run (training.reportTo)."""

    mlflow_run_id: Short | None = Field(
        None, description="Id of the MLflow run the trainer reported to (once it exits)."
    )


class FineTuneJobStatus(_Status):
    """Observed state of a FineTuneJob."""

    phase: Phase | None = Field(
        None, description="Pending, Running, Suspended, Succeeded or Failed."
    )
    reason: Short | None = Field(None, description="CamelCase reason for the phase.")
    message: Text | None = Field(None, description="Details for the phase, e.g. what to fix.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation the operator last acted on."
    )
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)] | None = Field(
        None,
        description="metav1-style conditions, one per type (kstatus: Ready, Reconciling, "
        "Stalled; as a Job: Complete, Failed).",
        # One entry per type, merged by type in server-side apply, as metav1 conditions are.
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    job_name: Short | None = Field(None, description="Name of the batch/v1 Job.")
    start_time: Timestamp | None = Field(None, description="When the Job started (RFC 3339).")
    completion_time: Timestamp | None = Field(
        None, description="When the FineTuneJob finished (RFC 3339)."
    )
    restarts: int | None = Field(
        None, description="Trainer pods that failed and were retried (disruptions included)."
    )
    pod_name: Short | None = Field(
        None, description="The trainer pod of the current or last attempt (for kubectl logs)."
    )
    progress: ProgressStatus | None = Field(None, description="Live training progress.")
    checkpoint: CheckpointStatus | None = Field(None, description="The newest complete checkpoint.")
    output: OutputStatus | None = Field(None, description="The trained artifacts.")
    provenance: ProvenanceStatus | None = Field(
        None, description="What produced the adapter: inputs, config, image, software."
    )
    tracking: TrackingStatus | None = Field(
        None, description="Where experiment trackers recorded the run."
    )
