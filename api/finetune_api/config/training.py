"""Optimization: steps, batch, learning rate, checkpoints, and what the loss is taken on."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import SpecModel, cel
from .eval_data import EarlyStoppingSpec
from .tracking import TRACKING_RULES, MlflowSpec, ReportTo, WandbSpec, tracking_problem

Optimizer = Literal[
    "adamw_8bit",
    "paged_adamw_8bit",
    "adamw_torch",
    "adamw_torch_fused",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]


class DivergenceSpec(SpecModel):
    """When training counts as diverged beyond a non-finite loss or gradient norm (which
    always stops the run). Both rules are off until set."""

    max_loss: Annotated[float, Field(gt=0, le=1e6)] | None = Field(
        None,
        description="A logged training loss above this stops the run as Diverged. Empty: no limit.",
    )
    rise_factor: Annotated[float, Field(gt=1, le=1000)] | None = Field(
        None,
        description="A logged training loss above riseFactor times the lowest loss logged so "
        "far, for patienceSteps logging steps in a row, stops the run as Diverged. Empty: "
        "off.",
    )
    patience_steps: Annotated[int, Field(ge=1, le=10_000)] = Field(
        3,
        description="Consecutive logging steps the loss must stay above riseFactor times its "
        "lowest before the run counts as diverged. Default: 3.",
    )


class TrainingSpec(SpecModel):
    """Optimization settings. Defaults reproduce the original example: 20 steps, batch 1 x 4
    gradient accumulation, learning rate 2e-4, adamw_8bit, a checkpoint every 10 steps."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.maxSteps) && has(self.numEpochs))",
                    "set only one of training.maxSteps and training.numEpochs",
                ),
                cel(
                    "!has(self.saveSteps) || !has(self.maxSteps) || self.saveSteps <= "
                    "self.maxSteps",
                    "training.saveSteps must not exceed training.maxSteps, or no checkpoint "
                    "would be written before the end",
                ),
                cel(
                    "!has(self.warmupSteps) || !has(self.maxSteps) || self.warmupSteps < "
                    "self.maxSteps",
                    "training.warmupSteps must be smaller than training.maxSteps",
                ),
                *TRACKING_RULES,
            ]
        }
    }

    max_steps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        20,
        description="Optimizer steps to run. Default: 20. Set numEpochs instead (and leave "
        "this unset) to train by epochs.",
    )
    num_epochs: Annotated[float, Field(gt=0, le=1000)] | None = Field(
        None, description="Epochs to run when maxSteps is not set."
    )
    per_device_train_batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        1, description="Sequences per device per micro-step. Default: 1."
    )
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = Field(
        4, description="Micro-steps accumulated per optimizer step. Default: 4."
    )
    auto_micro_batch: bool = Field(
        True,
        description="Run the effective batch (perDeviceTrainBatchSize x "
        "gradientAccumulationSteps) as the largest micro-batch that fits in GPU memory, with "
        "the rest as accumulation: same sequences per optimizer step, same math, faster. "
        "Set false to run exactly the given micro-batch. Default: true.",
    )
    learning_rate: Annotated[float, Field(gt=0, le=1.0)] = Field(
        2e-4, description="Peak learning rate. Default: 2e-4."
    )
    lr_scheduler_type: Scheduler = Field("linear", description="Schedule. Default: linear.")
    warmup_steps: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        5, description="Linear warm-up steps. Default: 5."
    )
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01, description="Weight decay. Default: 0.01."
    )
    max_grad_norm: Annotated[float, Field(gt=0, le=1000)] = Field(
        1.0, description="Gradient clipping norm. Default: 1.0."
    )
    optimizer: Optimizer = Field(
        "adamw_8bit",
        description="Optimizer (transformers names). adamw_8bit needs a GPU (bitsandbytes); on "
        "CPU the trainer uses adamw_torch and says so. Default: adamw_8bit.",
    )
    save_steps: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        10, description="Write a checkpoint every N optimizer steps. Default: 10."
    )
    save_total_limit: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None,
        description="Keep at most N checkpoints; the newest complete one is never deleted. "
        "Empty keeps all.",
    )
    logging_steps: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1, description="Log and publish metrics every N optimizer steps. Default: 1."
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        3407, description="Random seed (data order, LoRA init). Default: 3407."
    )
    reasoning_effort: Literal["low", "medium", "high"] = Field(
        "medium",
        description="gpt-oss reasoning effort written into each rendered chat's system "
        "message (sharegpt data). Default: medium.",
    )
    train_on: Literal["assistant", "final", "all"] = Field(
        "assistant",
        description="Which tokens carry loss: assistant (the whole assistant turn, reasoning "
        "included), final (only the final answer), all (every token). Default: assistant.",
    )
    gradient_checkpointing: Literal["auto", "unsloth", "on", "off"] = Field(
        "auto",
        description="Activation checkpointing, which saves memory at the cost of recomputing "
        "each layer's forward pass (the gradients are the same either way): auto (off when "
        "the micro-batch fits the GPU's memory without it, else unsloth), unsloth (offloaded, "
        "the example's setting), on (standard), off. Default: auto.",
    )
    divergence: DivergenceSpec = Field(
        default_factory=DivergenceSpec,
        description="Stop as Diverged, keeping the newest checkpoint from before, when the "
        "logged loss passes these limits. A non-finite loss or gradient norm always stops "
        "the run. Changing these settings does not change what a checkpoint means: the run "
        "resumes from its checkpoints.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch rows of similar length together (length-sorted groups within "
        "shuffled mega-batches), so micro-batches carry little padding. Same rows per epoch "
        "in a different order than the default shuffle. Default: false.",
    )

    report_to: ReportTo | None = Field(
        None,
        description="Experiment trackers that receive the run's parameters and per-step "
        "metrics: tensorboard (event files beside the checkpoints), mlflow (training.mlflow), "
        "wandb (training.wandb; offline without an API key). Default: none.",
    )
    mlflow: MlflowSpec | None = Field(
        None, description="The MLflow tracking server, when reportTo lists mlflow."
    )
    wandb: WandbSpec | None = Field(
        None, description="Weights & Biases settings, when reportTo lists wandb."
    )

    @model_validator(mode="after")
    def _trackers_agree(self) -> TrainingSpec:
        problem = tracking_problem(self.report_to, self.mlflow, self.wandb)
        if problem:
            raise ValueError(problem)
        return self

    eval_steps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        None,
        description="Evaluate on dataset.eval every N optimizer steps, and at the last "
        "step. Default: at every checkpoint (saveSteps).",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None,
        description="Stop once the eval loss stops improving (needs dataset.eval). Empty: "
        "train to the end.",
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingSpec:
        if "num_epochs" in self.model_fields_set and "max_steps" not in self.model_fields_set:
            self.max_steps = None
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("set training.maxSteps or training.numEpochs")
        if self.max_steps is not None and self.num_epochs is not None:
            raise ValueError("set only one of training.maxSteps and training.numEpochs")
        if self.max_steps is not None:
            # Defaults sized for 20 steps shrink to fit shorter runs; values the user wrote
            # are checked as written.
            if "save_steps" not in self.model_fields_set:
                self.save_steps = min(self.save_steps, self.max_steps)
            if "warmup_steps" not in self.model_fields_set:
                self.warmup_steps = min(self.warmup_steps, self.max_steps - 1)
            if self.save_steps > self.max_steps:
                raise ValueError(
                    f"training.saveSteps ({self.save_steps}) must not exceed training.maxSteps "
                    f"({self.max_steps}), or no checkpoint would be written before the end"
                )
            if self.warmup_steps >= self.max_steps:
                raise ValueError(
                    f"training.warmupSteps ({self.warmup_steps}) must be smaller than "
                    f"training.maxSteps ({self.max_steps})"
                )
        return self

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps
