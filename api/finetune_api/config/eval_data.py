"""Evaluation: the data evaluated on (``dataset.eval``), when training stops early
(``training.earlyStopping``), and the rules that tie them to ``training`` and ``output``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from .base import HubRepoId, LocalPath, ShortString, SpecModel, cel
from .sources import ConfigMapKey, PvcPath, S3Location
from .split import SplitExpr

if TYPE_CHECKING:
    from .trainer_config import TrainerConfig

MAX_EVAL_FRACTION = 0.5
_SOURCES = ("name", "path", "pvc", "s3", "config_map")
_SOURCE_FIELDS = (
    "dataset.eval.name, dataset.eval.path, dataset.eval.pvc, dataset.eval.s3 and "
    "dataset.eval.configMap"
)
_FORMS = (
    "set one of dataset.eval.split (a split of the training source), a separate source "
    "(dataset.eval.name, dataset.eval.path, dataset.eval.pvc, dataset.eval.s3 or "
    "dataset.eval.configMap, with an optional split), or "
    "dataset.eval.fraction (rows held out of the training data)"
)


class EvalDataSpec(SpecModel):
    """The evaluation rows, rendered, masked and truncated as the training rows are. One
    form: split (another split of the training source, e.g. test), a separate source (a Hub
    dataset name, a path, a PVC path, an S3 prefix or object, or a ConfigMap key; its split
    defaults to train), or fraction (that
    share of the training rows, drawn with seed, is held out and never trained on)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.fraction) != (has(self.split) || has(self.name) || "
                    "has(self.path) || has(self.pvc) || has(self.s3) || has(self.configMap))",
                    _FORMS,
                ),
                cel(
                    "[has(self.name), has(self.path), has(self.pvc), has(self.s3), "
                    "has(self.configMap)].filter(x, x).size() <= 1",
                    f"set at most one of {_SOURCE_FIELDS}",
                ),
                cel("!has(self.seed) || has(self.fraction)", "dataset.eval.seed needs fraction"),
                cel(
                    "!(has(self.configName) || has(self.revision)) || has(self.name)",
                    "dataset.eval.configName and dataset.eval.revision are only used with "
                    "dataset.eval.name",
                ),
            ]
        }
    }

    split: SplitExpr | None = Field(
        None,
        description="Split to evaluate on, with optional slicing (test, validation[:200]): "
        "of the training source, or of eval's own source (default train there).",
    )
    name: HubRepoId | None = Field(None, description="A separate Hugging Face Hub dataset.")
    config_name: ShortString | None = Field(
        None, description="Hub dataset configuration (subset) name, with name."
    )
    revision: ShortString | None = Field(None, description="Hub branch, tag or commit, with name.")
    path: LocalPath | None = Field(
        None, description="A separate .json, .jsonl or .parquet file, or a directory of them."
    )
    pvc: PvcPath | None = Field(None, description="A separate data file or directory on a PVC.")
    s3: S3Location | None = Field(
        None,
        description="A separate data object, or prefix of data objects, on S3; its "
        "credentialsSecretRef is its own (it may differ from dataset.s3's).",
    )
    config_map: ConfigMapKey | None = Field(
        None,
        description="A separate small dataset in a ConfigMap key whose name ends in .jsonl "
        "or .json (at most 1 MiB).",
    )
    fraction: Annotated[float, Field(gt=0, le=MAX_EVAL_FRACTION)] | None = Field(
        None,
        description="Hold out this fraction of the training rows (after maxSamples) for "
        "evaluation, in (0, 0.5]; the rest are trained on.",
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = Field(
        None,
        description="Seed of the held-out draw (fraction), so every attempt and rerun holds "
        "out the same rows. Default: training.seed.",
    )
    max_samples: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        None, description="Evaluate on at most the first N evaluation rows. Empty: all."
    )

    @model_validator(mode="after")
    def _one_form(self) -> EvalDataSpec:
        sources = [s for s in _SOURCES if getattr(self, s) is not None]
        if len(sources) > 1:
            names = ", ".join("configMap" if s == "config_map" else s for s in sources)
            raise ValueError(f"set at most one of {_SOURCE_FIELDS} (got {names})")
        named = self.split is not None or bool(sources)
        if self.fraction is not None and named:
            raise ValueError(
                f"dataset.eval.fraction holds rows out of the training data, so it takes no "
                f"split or source; {_FORMS}"
            )
        if self.fraction is None and not named:
            raise ValueError(_FORMS)
        if self.seed is not None and self.fraction is None:
            raise ValueError("dataset.eval.seed is the seed of dataset.eval.fraction; set both")
        if self.name is None and (self.config_name is not None or self.revision is not None):
            raise ValueError(
                "dataset.eval.configName and dataset.eval.revision are only used with "
                "dataset.eval.name"
            )
        return self

    @property
    def separate_source(self) -> bool:
        return any(getattr(self, s) is not None for s in _SOURCES)


class EarlyStoppingSpec(SpecModel):
    """Stop training once the eval loss has not improved by minDelta for patience
    evaluations in a row. Needs dataset.eval."""

    patience: Annotated[int, Field(ge=1, le=10_000)] = Field(
        description="Evaluations in a row without improvement before training stops."
    )
    min_delta: Annotated[float, Field(ge=0, le=1e6)] = Field(
        0.0,
        description="How much lower than the best so far an eval loss must be to count as "
        "an improvement. Default: 0 (any decrease).",
    )


# Rules across sections, for the FineTuneJob's CEL (the pydantic side is check_evaluation).
EVAL_RULES = [
    cel(
        "has(self.dataset) && has(self.dataset.eval) || !has(self.training) || "
        "!(has(self.training.evalSteps) || has(self.training.earlyStopping))",
        "training.evalSteps and training.earlyStopping need dataset.eval: set "
        "dataset.eval.split, a separate source, or dataset.eval.fraction",
    ),
    cel(
        "has(self.dataset) && has(self.dataset.eval) || !has(self.output) || "
        "!has(self.output.keep) || self.output.keep == 'last'",
        "output.keep: best needs dataset.eval: set dataset.eval.split, a separate source, or "
        "dataset.eval.fraction",
    ),
    cel(
        "!has(self.output) || !has(self.output.keep) || self.output.keep == 'last' || "
        "!has(self.training) || !has(self.training.saveTotalLimit)",
        "output.keep: best keeps the best checkpoint until the end: leave "
        "training.saveTotalLimit unset",
    ),
    cel(
        "!has(self.output) || !has(self.output.keep) || self.output.keep == 'last' || "
        "!has(self.training) || !has(self.training.evalSteps) || "
        "!has(self.training.saveSteps) || "
        "self.training.evalSteps % self.training.saveSteps == 0",
        "output.keep: best picks among checkpoints, so every evaluation must fall on one: "
        "make training.evalSteps a multiple of training.saveSteps (or leave it unset)",
    ),
]


def eval_steps(config: TrainerConfig) -> int | None:
    """Evaluate every this many optimizer steps (default: at every checkpoint); None when
    there is no eval set."""
    if config.dataset.eval is None:
        return None
    return config.training.eval_steps or config.training.save_steps


def check_evaluation(config: TrainerConfig) -> None:
    """The cross-section rules of EVAL_RULES, with the same messages."""
    training, keep = config.training, config.output.keep
    if config.dataset.eval is None:
        if training.eval_steps is not None or training.early_stopping is not None:
            raise ValueError(EVAL_RULES[0]["message"])
        if keep == "best":
            raise ValueError(EVAL_RULES[1]["message"])
        return
    if keep != "best":
        return
    if training.save_total_limit is not None:
        raise ValueError(EVAL_RULES[2]["message"])
    every = eval_steps(config)
    if every is not None and every % training.save_steps != 0:
        raise ValueError(
            f"{EVAL_RULES[3]['message']} (evalSteps {every}, saveSteps {training.save_steps})"
        )
