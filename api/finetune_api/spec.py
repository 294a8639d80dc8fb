"""The FineTuneJob spec: the trainer's config plus how and where to run it.

The training part (model, dataset, lora, training, output) is the trainer's own schema,
embedded unchanged, so what the user writes is exactly what the trainer reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .config import DatasetSpec, ModelSpec, OutputSpec, TrainerConfig
from .config.base import K8sName, SpecModel, cel, no_nul, nul_rule
from .config.eval_data import EVAL_RULES

# resource.Quantity as Kubernetes parses it (500m, 4, 16Gi, 1.5G, 1e3), never negative: a
# value the API server would refuse fails here, naming the field, not at Job creation.
Quantity = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=64,
        pattern=r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$",
    ),
]
# Label and taint keys: an optional DNS prefix and a name.
QualifiedName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=317,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    ),
]
LabelValue = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
]
ImageRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\s]+$"),
    AfterValidator(no_nul),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "pattern": r"^[^\s]+$",
            "x-kubernetes-validations": [nul_rule()],
        }
    ),
]


class ResourcesSpec(SpecModel):
    """Compute for the trainer pod."""

    gpus: Annotated[int, Field(ge=0, le=16)] = Field(
        1, description="GPUs for the trainer (limits.<gpuResourceName>). Default: 1."
    )
    gpu_resource_name: QualifiedName = Field(
        "nvidia.com/gpu", description="Extended resource name of a GPU. Default: nvidia.com/gpu."
    )
    cpu: Quantity | None = Field(
        None, description="CPU request (no limit is set, so data loading is never throttled)."
    )
    memory: Quantity | None = Field(
        None, description="Memory request and limit (equal, so the pod is not evicted first)."
    )
    shared_memory: Quantity = Field(
        "8Gi",
        description="Size of the in-memory /dev/shm volume for data-loader workers. Default: 8Gi.",
    )


class Toleration(SpecModel):
    """A toleration, as in a pod spec."""

    # The same pod validation rules as the validator below, so a bad toleration is refused
    # at admission instead of after creation, when spec.scheduling can no longer change.
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
                    "|| self.value == ''",
                    "a toleration with operator Exists takes no value; remove value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && "
                    "self.effect == 'NoExecute')",
                    "tolerationSeconds applies only to effect NoExecute; set that effect",
                ),
                cel(
                    "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                    "a toleration without a key must use operator Exists",
                ),
            ]
        }
    }

    key: QualifiedName | None = Field(None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal.")
    value: LabelValue | None = Field(None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; empty matches all effects."
    )
    toleration_seconds: Annotated[int, Field(ge=0)] | None = Field(
        None, description="For NoExecute: how long the pod stays bound after the taint appears."
    )

    @model_validator(mode="after")
    def _as_kubernetes_accepts(self) -> Toleration:
        # The pod validation rules, checked here so the field and the fix are named.
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value; remove value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies only to effect NoExecute; set that effect")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        return self


class SchedulingSpec(SpecModel):
    """Where the trainer pod may run."""

    node_selector: Annotated[dict[QualifiedName, LabelValue], Field(max_length=64)] | None = Field(
        None, description="Node labels the trainer pod requires."
    )
    tolerations: Annotated[list[Toleration], Field(max_length=64)] | None = Field(
        None, description="Tolerations, e.g. for tainted GPU node pools."
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="A core/v1 Affinity, passed to the pod unchanged.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: K8sName | None = Field(None, description="PriorityClass of the pod.")
    queue_name: LabelValue | None = Field(
        None,
        description="Kueue LocalQueue: sets the kueue.x-k8s.io/queue-name label on the Job, "
        "which is created suspended and admitted by Kueue.",
    )


# Long enough for a Secret created right after the FineTuneJob, or a registry's brief
# hiccup; short enough that a typo does not hold a GPU for long.
DEFAULT_STARTUP_DEADLINE_SECONDS = 300
MIN_STARTUP_DEADLINE_SECONDS = 10
MAX_STARTUP_DEADLINE_SECONDS = 86400
# Progress is a step done or the trainer moving to its next stage, so the deadline must
# outlast the longest stage of a healthy run: loading gpt-oss-20b from the Hub downloads
# about 13 GB of weights (some 11 minutes at 20 MB/s) and compiling takes a few minutes
# more. Half an hour leaves room for a slow network and still frees a hung trainer's GPU
# the same afternoon. Not covered: a merged 16-bit export (some 40 GB, one Saving stage:
# over half an hour to S3 at 20 MB/s) or a large dataset.eval (one Evaluating stage): such
# runs need a longer deadline (docs/api.md says so).
DEFAULT_PROGRESS_DEADLINE_SECONDS = 1800
MIN_PROGRESS_DEADLINE_SECONDS = 10
MAX_PROGRESS_DEADLINE_SECONDS = 7 * 86400


class LifecycleSpec(SpecModel):
    """Run control; these fields may be changed while the FineTuneJob runs."""

    suspend: bool = Field(
        False,
        description="Suspend the run: the trainer checkpoints and stops; unsuspending resumes "
        "from that checkpoint. Default: false.",
    )
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = Field(
        3,
        description="Retries after failures (each resumes from the newest checkpoint). "
        "Disruptions such as preemption and eviction do not count. Default: 3.",
    )
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Wall-clock limit for the whole run, retries included."
    )
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Delete the finished Job (not the FineTuneJob, nor the outputs) this many "
        "seconds after the FineTuneJob recorded how it ended.",
    )
    startup_deadline_seconds: Annotated[
        int, Field(ge=MIN_STARTUP_DEADLINE_SECONDS, le=MAX_STARTUP_DEADLINE_SECONDS)
    ] = Field(
        DEFAULT_STARTUP_DEADLINE_SECONDS,
        description="How long the trainer container may wait in a state it cannot leave by "
        "itself (CreateContainerConfigError, CreateContainerError, ErrImagePull, "
        "ImagePullBackOff, InvalidImageName: a missing Secret or key, an image that cannot be "
        "pulled) before the operator deletes its Job, freeing the GPU, and the FineTuneJob "
        "fails with StartupFailed, naming the field to fix. Counted from when the operator "
        "first saw the container in that state (an image pull that takes long but succeeds "
        "does not count; a change applies to a trainer already waiting). Default: "
        f"{DEFAULT_STARTUP_DEADLINE_SECONDS}.",
    )
    progress_deadline_seconds: Annotated[
        int, Field(ge=MIN_PROGRESS_DEADLINE_SECONDS, le=MAX_PROGRESS_DEADLINE_SECONDS)
    ] = Field(
        DEFAULT_PROGRESS_DEADLINE_SECONDS,
        description="How long a Running trainer may make no progress (its step does not "
        "advance and it does not move on to its next stage: Downloading, Loading, Compiling, "
        "Training, Saving) before the FineTuneJob is marked Stalled (condition Stalled=True, "
        "reason ProgressDeadlineExceeded, a Warning Event; the phase stays Running). Counted "
        "from the trainer's start, then from its last progress; a trainer whose metrics "
        "endpoint stops answering makes no progress the operator can see. As a Deployment's "
        "progressDeadlineSeconds. Default: "
        f"{DEFAULT_PROGRESS_DEADLINE_SECONDS} (covers downloading and loading gpt-oss-20b "
        "and compiling on a slow network; raise it for a merged 16-bit export or a large "
        "dataset.eval, each one stage with no step in it).",
    )
    on_stall: Literal["Report", "Restart"] = Field(
        "Report",
        description="What happens past progressDeadlineSeconds: Report (mark the FineTuneJob "
        "Stalled and leave the trainer running) or Restart (also delete the trainer pod; the "
        "Job starts another that resumes from the newest checkpoint, counted in "
        "status.restarts and against backoffLimit, and only while backoffLimit leaves a "
        "retry). Default: Report.",
    )


# The trainer's own config may write to a local directory (its default, "outputs"); in a
# pod that directory is on the pod's scratch volume, gone with the pod: retries would start
# from step 0 and the reported adapter would not exist. So a FineTuneJob must name storage
# that outlives the pod.
DURABLE_OUTPUT_MESSAGE = (
    "set spec.output.pvc (a PersistentVolumeClaim) or spec.output.s3 (an S3 prefix): "
    "checkpoints and the adapter must outlive the trainer pod, and output.path would be "
    "inside it"
)


# The trainer's own config takes a relative model.path or dataset.path (the original
# example reads ./my_conversations.json). In a pod it would be relative to the trainer's
# empty scratch directory, and an older trainer read a relative dataset.path such as
# team/chats as a Hub dataset id, training on a public dataset of that name.
# The parts of a spec that take a local path, which must be absolute in the trainer pod.
LOCAL_PATH_PARTS = ("model", "dataset", "dataset.eval")


def _levels(part: str) -> list[str]:
    """``dataset.eval`` -> [dataset, dataset.eval]: each must be there for the next."""
    names = part.split(".")
    return [".".join(names[: i + 1]) for i in range(len(names))]


def relative_path_message(part: str) -> str:
    what = "model directory" if part == "model" else "data"
    return (
        f"{part}.path must be an absolute path: in the trainer pod a relative path is "
        f"relative to an empty scratch directory; put the {what} on a volume with "
        f"{part}.pvc, or give an absolute path inside the trainer image"
    )


RECREATE_FOR_OUTPUT = (
    "spec.output cannot change after creation: re-create the FineTuneJob with "
    "spec.output.pvc or spec.output.s3"
)


class FineTuneJobSpec(TrainerConfig):
    """Fine-tune a causal LM with LoRA (4-bit QLoRA by default) on one GPU node."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                # Checked on create only (oldSelf is empty then): output is immutable, so on
                # an update it is what it was at creation. A FineTuneJob admitted before this
                # rule existed keeps its lifecycle editable (suspend it, delete it later)
                # instead of every edit being refused for a field it can no longer change.
                {
                    **cel(
                        "oldSelf.hasValue() || "
                        "has(self.output) && (has(self.output.pvc) || has(self.output.s3))",
                        DURABLE_OUTPUT_MESSAGE,
                    ),
                    "optionalOldSelf": True,
                },
                # On create only too, like the output rule: model and dataset are immutable,
                # and a FineTuneJob admitted before this rule keeps an editable lifecycle.
                *(
                    {
                        **cel(
                            "oldSelf.hasValue() || "
                            + "".join(f"!has(self.{level}) || " for level in _levels(part))
                            + f"!has(self.{part}.path) || self.{part}.path.startsWith('/')",
                            relative_path_message(part),
                        ),
                        "optionalOldSelf": True,
                    }
                    for part in LOCAL_PATH_PARTS
                ),
                *EVAL_RULES,
            ]
        }
    }

    output: OutputSpec = Field(
        default_factory=OutputSpec,
        description="Where checkpoints and the adapter go. Required: a PVC (pvc) or an S3 "
        "prefix (s3); output.path is only for running the trainer outside Kubernetes.",
    )

    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Compute for the trainer pod."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Where the trainer pod may run."
    )
    lifecycle: LifecycleSpec = Field(
        default_factory=LifecycleSpec, description="Suspend, retries, deadlines and cleanup."
    )
    image: ImageRef | None = Field(
        None, description="Trainer image. Default: the operator's configured trainer image."
    )
    image_pull_secrets: Annotated[list[K8sName], Field(max_length=16)] | None = Field(
        None, description="Names of Secrets for pulling the trainer image."
    )
    service_account_name: K8sName | None = Field(
        None,
        description="ServiceAccount of the trainer pod. Default: the namespace's default "
        "account; the trainer needs no Kubernetes API access.",
    )

    @field_validator("model", "dataset")
    @classmethod
    def _absolute_path(cls, value: ModelSpec | DatasetSpec, info: Any) -> ModelSpec | DatasetSpec:
        if value.path is not None and not value.path.startswith("/"):
            raise ValueError(relative_path_message(info.field_name))
        evaluated = getattr(value, "eval", None)
        if evaluated is not None and evaluated.path and not evaluated.path.startswith("/"):
            raise ValueError(relative_path_message("dataset.eval"))
        return value

    def trainer_config(self) -> TrainerConfig:
        """The training part alone: what goes into the trainer's config file."""
        return TrainerConfig.model_validate(
            {name: getattr(self, name) for name in TrainerConfig.model_fields}
        )


def output_problems(spec: FineTuneJobSpec) -> list[str]:
    """Why the spec cannot get a Job: its output would not outlive the trainer pod.

    Checked only before the Job is created, not when the spec is parsed: the API server
    refuses such a FineTuneJob at admission, but one created before that rule existed may
    already have a Job, and that run is still reported on to its end."""
    if spec.output.pvc is None and spec.output.s3 is None:
        # Only a FineTuneJob admitted without the rule gets here, and its output is immutable.
        return [f"spec.output: {DURABLE_OUTPUT_MESSAGE}; {RECREATE_FOR_OUTPUT}"]
    return []


# Fields whose change would alter what is being trained (or a running pod that cannot be
# changed in place); everything in lifecycle stays mutable.
IMMUTABLE_FIELDS: tuple[str, ...] = (
    "model",
    "dataset",
    "lora",
    "training",
    "output",
    "resources",
    "scheduling",
    "image",
    "imagePullSecrets",
    "serviceAccountName",
)
