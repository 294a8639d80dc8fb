"""The FineTuneJob status, written only by the operator.

Typed so the CRD documents it (``kubectl explain finetunejob.status``) and so the operator
cannot write a shape the API server would prune.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .config.base import (
    MAX_K8S_NAME,
    MAX_LOCAL_PATH,
    MAX_RELATIVE_PATH,
    MAX_S3_URI,
)

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})

MAX_TEXT = 32768
MAX_SHORT = 1024
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Short = Annotated[str, Field(max_length=MAX_SHORT)]
# A location under the spec's output (pvc://claim/path/..., s3://bucket/prefix/..., or a
# local path) plus what the trainer appends (/checkpoint-N, /final_model, ...). Longer than
# any location the spec accepts, so a status that reports one is never refused.
MAX_URI = (
    max(MAX_LOCAL_PATH, MAX_S3_URI, len("pvc://") + MAX_K8S_NAME + 1 + MAX_RELATIVE_PATH) + 256
)
Uri = Annotated[str, Field(max_length=MAX_URI)]


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(_Status):
    """A metav1.Condition."""

    type: Short = Field(description="Ready, Reconciling, Stalled or Suspended.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Short = Field(description="CamelCase reason for the last transition.")
    message: Text = Field("", description="Human-readable details.")
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this condition was computed from."
    )
    last_transition_time: Short = Field(
        description="When status last changed (RFC 3339); unchanged while status stays the same."
    )


class ProgressStatus(_Status):
    """Live training progress, read from the trainer's metrics endpoint."""

    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    summary: Short | None = Field(None, description="step/totalSteps, for the printer column.")
    epoch: float | None = Field(None, description="Epochs done (fractional).")
    loss: float | None = Field(None, description="Training loss at the last logging step.")
    learning_rate: float | None = Field(None, description="Current learning rate.")
    tokens_per_second: float | None = Field(None, description="Training throughput.")
    eta_seconds: int | None = Field(None, description="Estimated seconds to the last step.")
    updated_at: Short | None = Field(None, description="When this progress was read (RFC 3339).")


class CheckpointStatus(_Status):
    """The newest complete checkpoint."""

    step: int = Field(description="Optimizer step of the checkpoint.")
    uri: Uri = Field(description="Where it is: pvc://claim/path, s3://bucket/key or a path.")


class OutputStatus(_Status):
    """The trained artifacts."""

    adapter_uri: Uri | None = Field(None, description="The final LoRA adapter (final_model).")
    merged_uri: Uri | None = Field(None, description="The merged 16-bit model, if exported.")


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
    conditions: Annotated[list[Condition], Field(max_length=16)] | None = Field(
        None, description="metav1-style conditions (kstatus: Ready, Reconciling, Stalled)."
    )
    job_name: Short | None = Field(None, description="Name of the batch/v1 Job.")
    start_time: Short | None = Field(None, description="When the Job started (RFC 3339).")
    completion_time: Short | None = Field(
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
