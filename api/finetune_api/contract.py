"""The contract between the operator and the trainer pod, importable by both.

Everything the two sides must agree on lives here and nowhere else: exit codes, where the
operator mounts things, environment variable names, the metrics endpoint and its metric
names, and the JSON termination message. Pure Python plus pydantic: the operator imports
this without torch, and the trainer without Kubernetes.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ExitCode(enum.IntEnum):
    """What the trainer's exit status means. The Job's podFailurePolicy fails fast on
    INVALID_INPUT (retrying cannot fix a bad config or bad data) and retries the rest."""

    SUCCEEDED = 0
    FAILED = 1  # anything unexpected: retried, resuming from the newest checkpoint
    INTERRUPTED = 75  # SIGTERM honoured after a best-effort checkpoint (sysexits EX_TEMPFAIL)
    INVALID_INPUT = 78  # bad config or bad data (sysexits EX_CONFIG): never retried


# --- The config file the operator writes --------------------------------------------------
# It carries these two keys, saying that every other key is spelled as the schema spells it
# (camelCase): the trainer then reads each field one way only, never applying the original
# example's legacy renames (which read a relative dataset.path as a Hub dataset id).
TRAINER_CONFIG_API_VERSION = "finetune.dev/v1alpha1"
TRAINER_CONFIG_KIND = "TrainerConfig"
TRAINER_CONFIG_MARKER = {"apiVersion": TRAINER_CONFIG_API_VERSION, "kind": TRAINER_CONFIG_KIND}

# --- Where the operator puts things in the pod ------------------------------------------
CONFIG_DIR = "/etc/finetune"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
# Each referenced PVC is mounted at <root>/<claimName>; the trainer resolves PvcPath there.
PVC_MOUNT_ROOT = "/mnt/pvc"
# Each referenced ConfigMap is mounted at <root>/<name>; keys are files.
CONFIGMAP_MOUNT_ROOT = "/mnt/configmap"
# Writable scratch: Hub cache, S3 staging, temporary files.
SCRATCH_DIR = "/scratch"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class Env:
    """Environment variables the trainer reads (all optional outside Kubernetes)."""

    CONFIG = "FTO_CONFIG"  # config file path when --config is not given
    OUTPUT_DIR = "FTO_OUTPUT_DIR"  # overrides output.path
    PVC_ROOT = "FTO_PVC_ROOT"  # overrides PVC_MOUNT_ROOT
    CONFIGMAP_ROOT = "FTO_CONFIGMAP_ROOT"  # overrides CONFIGMAP_MOUNT_ROOT
    METRICS_HOST = "FTO_METRICS_HOST"  # bind address of the metrics server
    METRICS_PORT = "FTO_METRICS_PORT"  # 0 disables the metrics server
    TERMINATION_LOG = "FTO_TERMINATION_LOG"  # where the termination message is written
    POD_IP = "POD_IP"  # downward API; the metrics server binds here when set
    SCRATCH_DIR = "FTO_SCRATCH_DIR"  # overrides SCRATCH_DIR (S3 staging, downloads)
    HF_TOKEN = "HF_TOKEN"
    # plain (default) or json: one JSON object per log line on stderr, for log pipelines.
    LOG_FORMAT = "FTO_LOG_FORMAT"
    # Who holds the output location: the same FineTuneJob's next pod takes its lease over at
    # once, any other writer waits for it to end or expire. Default: host name and pid.
    RUN_ID = "FTO_RUN_ID"
    # The pod's terminationGracePeriodSeconds: how long the trainer may go on retrying
    # uploads after a stop signal or a failure before it exits. Default: 30 (Kubernetes').
    GRACE_PERIOD_SECONDS = "FTO_GRACE_PERIOD_SECONDS"
    # The FineTuneJob this pod trains for: experiment trackers name and tag the run after
    # it (<namespace>/<name>, and the uid in RUN_ID). Default: the config file's name.
    JOB_NAMESPACE = "FTO_JOB_NAMESPACE"
    JOB_NAME = "FTO_JOB_NAME"
    # Tracking credentials, under the names the tracking libraries read.
    MLFLOW_TRACKING_TOKEN = "MLFLOW_TRACKING_TOKEN"
    MLFLOW_TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"
    MLFLOW_TRACKING_PASSWORD = "MLFLOW_TRACKING_PASSWORD"
    WANDB_API_KEY = "WANDB_API_KEY"

    @staticmethod
    def s3(role: Literal["model", "dataset", "output", "eval"], what: str) -> str:
        """Per-location S3 credentials, so model, dataset, output and the eval set
        (dataset.eval.s3, role eval) may use different Secrets: FTO_S3_OUTPUT_ACCESS_KEY_ID,
        ..._SECRET_ACCESS_KEY, ..._SESSION_TOKEN."""
        return f"FTO_S3_{role.upper()}_{what}"


S3_CREDENTIAL_PARTS = ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN")

# --- Metrics endpoint (Prometheus text format) ------------------------------------------
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
METRICS_PATH = "/metrics"


class Metric:
    """Gauge names the trainer serves and the operator reads."""

    STEP = "finetune_step"
    TOTAL_STEPS = "finetune_total_steps"
    EPOCH = "finetune_epoch"
    LOSS = "finetune_loss"
    LEARNING_RATE = "finetune_learning_rate"
    GRAD_NORM = "finetune_grad_norm"
    TOKENS_PER_SECOND = "finetune_tokens_per_second"
    GPU_MEMORY_ALLOCATED = "finetune_gpu_memory_allocated_bytes"
    GPU_MEMORY_RESERVED = "finetune_gpu_memory_reserved_bytes"
    CHECKPOINT_STEP = "finetune_checkpoint_step"
    # A state set (Prometheus' Enum): one sample per TrainerStage, labelled
    # STAGE_LABEL="<stage>", 1 for the stage the trainer is in and 0 for the others.
    STAGE = "finetune_stage"
    RESUMED_FROM_STEP = "finetune_resumed_from_step"
    EVAL_LOSS = "finetune_eval_loss"
    EVAL_MEAN_TOKEN_ACCURACY = "finetune_eval_mean_token_accuracy"
    BEST_EVAL_LOSS = "finetune_best_eval_loss"
    # For dashboards and alerts (the operator reads none of these): a counter of the tokens
    # trained on (rate() it for tokens/s over any window), the time of the newest complete
    # checkpoint, and an info metric (value 1) labelled model, backend and version.
    TOKENS = "finetune_tokens"  # served as finetune_tokens_total
    LAST_CHECKPOINT_TIMESTAMP = "finetune_last_checkpoint_timestamp_seconds"
    INFO = "finetune"  # served as finetune_info


STAGE_LABEL = Metric.STAGE


class TrainerStage(enum.StrEnum):
    """Where the trainer is in its run, in order (Training and Saving alternate while it
    writes checkpoints)."""

    DOWNLOADING = "Downloading"  # the output prepared, data, tokenizer, an S3 model fetched
    LOADING = "Loading"  # the model's weights read (a Hub model's downloaded first)
    COMPILING = "Compiling"  # from building the trainer until its first optimizer step ends
    TRAINING = "Training"
    EVALUATING = "Evaluating"  # dataset.eval scored (between steps, like a checkpoint)
    SAVING = "Saving"  # a checkpoint, or the final adapter (and merged export), written


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TrainerProgress(_Wire):
    """A snapshot of the trainer's metrics."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    stage: TrainerStage | None = None
    checkpoint_step: int | None = None
    eval_loss: float | None = None


# --- Termination message -----------------------------------------------------------------
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps

TerminationStatus = Literal["succeeded", "failed", "interrupted", "invalid_input"]


class TrainerReason(enum.StrEnum):
    """Every reason the trainer puts in its termination message, and no other.

    The message is written by whatever runs in the trainer container, which a FineTuneJob
    may replace (``spec.image``); so the operator takes a reason from it only when it is
    one of these (:meth:`TerminationMessage.known_reason`), and a generic one otherwise."""

    # succeeded
    COMPLETED = "Completed"
    ALREADY_COMPLETED = "AlreadyCompleted"
    DRY_RUN_PASSED = "DryRunPassed"
    # interrupted
    INTERRUPTED = "Interrupted"
    # failed (retried)
    TRAINING_FAILED = "TrainingFailed"
    DRY_RUN_FAILED = "DryRunFailed"
    # invalid_input (exit 78, never retried)
    INVALID_INPUT = "InvalidInput"
    INVALID_CONFIG = "InvalidConfig"
    CONFIG_NOT_FOUND = "ConfigNotFound"
    INVALID_S3_CREDENTIALS = "InvalidS3Credentials"
    INVALID_DATASET = "InvalidDataset"
    INVALID_MODEL = "InvalidModel"
    INCOMPATIBLE_CHECKPOINT = "IncompatibleCheckpoint"
    OUTPUT_IN_USE = "OutputInUse"  # another live trainer holds the output's lease
    OUT_OF_MEMORY = "OutOfMemory"
    # The loss or gradient norm went non-finite or past training.divergence's limits: the
    # same data and settings diverge again.
    DIVERGED = "Diverged"


TRAINER_REASONS: frozenset[str] = frozenset(reason.value for reason in TrainerReason)

# What a reason outside TRAINER_REASONS is reported as, by the message's status.
GENERIC_REASONS: dict[str, TrainerReason] = {
    "succeeded": TrainerReason.COMPLETED,
    "failed": TrainerReason.TRAINING_FAILED,
    "interrupted": TrainerReason.INTERRUPTED,
    "invalid_input": TrainerReason.INVALID_INPUT,
}


class CheckpointRef(_Wire):
    step: int
    uri: str


# Each text of the trainer's provenance record is cut to this (a long local path; the
# config names the whole source), so the record stays well within the termination
# message's 4 KiB and leaves room for the locations and the message.
PROVENANCE_TEXT_LIMIT = 256


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > PROVENANCE_TEXT_LIMIT:
        return value[: PROVENANCE_TEXT_LIMIT - 3] + "..."
    return value


ProvenanceText = Annotated[str, BeforeValidator(_cut)]


class TrainerProvenance(_Wire):
    """What the trainer records about what it trained: the inputs as it resolved them, its
    software and hardware, and the adapter it wrote. Written by whatever runs in the
    trainer container (``spec.image`` can replace it): the operator reports it as the
    trainer's claims, bounded, never as facts it checked."""

    model_source: ProvenanceText | None = None
    # The Hub commit of the snapshot loaded, or "sha256:<hex>" of a local or S3 model's
    # config and weight files.
    model_revision: ProvenanceText | None = None
    dataset_source: ProvenanceText | None = None
    # "sha256:<hex>" of the token ids and loss masks of the prepared training set, in order.
    dataset_digest: ProvenanceText | None = None
    dataset_rows: int | None = None
    # TrainerConfig.fingerprint() of the config the trainer read.
    config_fingerprint: ProvenanceText | None = None
    trainer_version: ProvenanceText | None = None
    torch_version: ProvenanceText | None = None
    transformers_version: ProvenanceText | None = None
    peft_version: ProvenanceText | None = None
    trl_version: ProvenanceText | None = None
    unsloth_version: ProvenanceText | None = None
    gpu_model: ProvenanceText | None = None  # "cpu" when no GPU was used
    gpu_count: int | None = None
    # "sha256:<hex>" of final_model's manifest.json.
    adapter_manifest_digest: ProvenanceText | None = None


def provenance_digest(
    model_revision: str, dataset_digest: str, config_fingerprint: str, image: str | None = None
) -> str:
    """``sha256:<hex>`` over what defines a training: the model revision, the rows trained
    on, the settings that change the result, and (where known) the trainer image. Without
    ``image`` it is the trainer's inputs digest (its model card); the operator's
    status.provenance.digest adds the image. Not the GPU, the library versions or where
    outputs go: the same training on another GPU is still the same training, and the
    image pins the libraries."""
    parts = ["finetune-provenance/v1", model_revision, dataset_digest, config_fingerprint]
    if image is not None:
        parts.append(image)
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


class FinalModelRef(_Wire):
    """Which weights became final_model: the step, and why (``output.keep``), as a person
    reads it: "best eval loss 1.234 at step 40" or "last step"."""

    step: int
    selection: str


class TerminationMessage(_Wire):
    """The JSON the trainer writes to its termination-message file on every exit, and the
    operator copies into the FineTuneJob's status."""

    status: TerminationStatus
    reason: str = Field(
        description="CamelCase machine-readable reason: one of TrainerReason when the "
        "trainer wrote it (the wire type stays a string, so a foreign one still decodes)."
    )
    message: str = ""
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    checkpoint: CheckpointRef | None = None
    adapter_uri: str | None = None
    merged_uri: str | None = None
    resumed_from_step: int | None = None
    provenance: TrainerProvenance | None = None
    # The MLflow run this attempt reported to (training.reportTo lists mlflow); bounded
    # where the operator copies it (status.tracking).
    mlflow_run_id: str | None = None
    eval_loss: float | None = Field(None, description="The last evaluation's loss.")
    eval_mean_token_accuracy: float | None = Field(
        None, description="The last evaluation's mean token accuracy."
    )
    final_model: FinalModelRef | None = Field(
        None, description="Which step's weights final_model holds, and why."
    )
    early_stop: str | None = Field(
        None, description="Why training stopped before its last step (training.earlyStopping)."
    )

    @property
    def known_reason(self) -> TrainerReason:
        """``reason`` when it is one the trainer emits, else the generic reason of
        ``status``: what the operator may copy into a status condition."""
        if self.reason in TRAINER_REASONS:
            return TrainerReason(self.reason)
        return GENERIC_REASONS[self.status]

    @property
    def progress(self) -> TrainerProgress:
        """The progress this message reports (its step, total steps and last loss), as the
        metrics endpoint would: the fields the two share, under the same names."""
        shared = TrainerProgress.model_fields.keys() & type(self).model_fields.keys()
        return TrainerProgress.model_validate(self.model_dump(include=shared))

    def encode(self) -> str:
        """JSON that fits the kubelet's 4 KiB limit. What gives way first: for a run that
        did not succeed, the provenance record (there is no adapter for it to describe, and
        the message says what to fix); then the message is shortened; last, the record of
        a run that succeeded (provenance.json beside the adapter still holds it)."""
        candidate = self
        text = candidate.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and self.status != "succeeded":
            candidate = candidate.model_copy(update={"provenance": None})
            text = candidate.model_dump_json(by_alias=True, exclude_none=True)
        over = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
        if over > 0:
            keep = max(0, len(self.message.encode()) - over - 16)
            short = self.message.encode()[:keep].decode(errors="ignore") + " [truncated]"
            candidate = candidate.model_copy(update={"message": short})
            text = candidate.model_dump_json(by_alias=True, exclude_none=True)
            if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
                text = candidate.model_copy(update={"provenance": None}).model_dump_json(
                    by_alias=True, exclude_none=True
                )
        return text

    @classmethod
    def decode(cls, text: str) -> TerminationMessage | None:
        """Parse a termination message; None when it is not ours (e.g. a crash's stderr)."""
        try:
            return cls.model_validate_json(text)
        except ValueError:
            return None
