"""The training data: where it is, its shape, and what to do with rows that do not fit."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import HubRepoId, K8sKey, LocalPath, ShortString, SpecModel, cel
from .eval_data import EvalDataSpec
from .sources import ConfigMapKey, PvcPath, S3Location
from .split import SplitExpr

DEFAULT_DATASET = "HuggingFaceH4/Multilingual-Thinking"

_SOURCES = ("name", "path", "pvc", "s3", "config_map")


class DatasetSpec(SpecModel):
    """The training data. Give exactly one source: a Hub dataset id (name), a local file or
    directory (path), a PVC path, an S3 prefix or object, or a ConfigMap key; with none, the
    Hub dataset HuggingFaceH4/Multilingual-Thinking is used. Local files may be .json,
    .jsonl or .parquet."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.name), has(self.path), has(self.pvc), has(self.s3), "
                    "has(self.configMap)].filter(x, x).size() <= 1",
                    "set at most one of dataset.name, dataset.path, dataset.pvc, dataset.s3 "
                    "and dataset.configMap",
                ),
                cel(
                    "!(has(self.configName) || has(self.revision)) || !(has(self.path) || "
                    "has(self.pvc) || has(self.s3) || has(self.configMap))",
                    "dataset.configName and dataset.revision are only used with dataset.name",
                ),
            ]
        }
    }

    name: HubRepoId | None = Field(
        None,
        description="Hugging Face Hub dataset id. Default: HuggingFaceH4/Multilingual-Thinking "
        "when no other source is set.",
    )
    config_name: ShortString | None = Field(
        None, description="Hub dataset configuration (subset) name."
    )
    revision: ShortString | None = Field(None, description="Hub branch, tag or commit to pin.")
    path: LocalPath | None = Field(
        None, description="A .json, .jsonl or .parquet file, or a directory of them."
    )
    pvc: PvcPath | None = Field(None, description="A data file or directory on a PVC.")
    s3: S3Location | None = Field(
        None, description="A data object, or a prefix of data objects, on S3."
    )
    config_map: ConfigMapKey | None = Field(
        None,
        description="A small dataset held in a ConfigMap key whose name ends in .jsonl or "
        ".json (the reader is chosen by it); a ConfigMap holds at most 1 MiB, so larger "
        "datasets belong on a PVC or S3.",
    )
    format: Literal["sharegpt", "custom"] = Field(
        "sharegpt",
        description="sharegpt: a column of chat messages (role, content, optional thinking) "
        "rendered through the model's chat template; custom: a column of ready-made "
        "training text. Default: sharegpt.",
    )
    messages_column: K8sKey = Field(
        "messages", description="Column holding the chat messages (sharegpt). Default: messages."
    )
    text_column: K8sKey = Field(
        "text", description="Column holding the training text (custom). Default: text."
    )
    split: SplitExpr = Field(
        "train", description="Split to train on, with optional slicing. Default: train."
    )
    max_samples: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        None, description="Use only the first N rows (after the split). Empty uses all rows."
    )
    overlong_policy: Literal["skip", "truncate", "error"] = Field(
        "skip",
        description="Rows longer than model.maxSeqLength: skip drops them (counted and "
        "logged), truncate cuts them, error fails the run naming the first such row. "
        "Default: skip.",
    )
    invalid_row_policy: Literal["error", "skip"] = Field(
        "error",
        description="Rows with a missing column, an unknown role or empty content: error "
        "fails the run naming the row; skip drops them (counted and logged). Default: error.",
    )
    special_tokens_in_content: Literal["error", "escape"] = Field(
        "error",
        description="Message text (sharegpt content, thinking, tool names and arguments) "
        "that spells out one of the tokenizer's special tokens, such as gpt-oss's "
        "<|start|> or <|message|>, which would otherwise become chat structure and could "
        "forge a turn: error makes such a row invalid (handled by invalidRowPolicy, naming "
        "the row and the token); escape trains on the text as plain text, so it never "
        "becomes a special token. Ready-made text (format: custom) is not affected. "
        "Default: error.",
    )

    eval: EvalDataSpec | None = Field(
        None,
        description="Data to evaluate on (eval loss and token accuracy, early stopping, "
        "output.keep: best): a split of this source, a separate source, or a held-out "
        "fraction of the training rows. Empty: no evaluation.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = [s for s in _SOURCES if getattr(self, s) is not None]
        if len(given) > 1:
            names = ", ".join("configMap" if g == "config_map" else g for g in given)
            raise ValueError(
                "set at most one of dataset.name, dataset.path, dataset.pvc, dataset.s3 and "
                f"dataset.configMap (got {names})"
            )
        if not given:
            self.name = DEFAULT_DATASET
        if self.name is None and (self.config_name is not None or self.revision is not None):
            raise ValueError(
                "dataset.configName and dataset.revision are only used with dataset.name"
            )
        return self

    @property
    def config_maps(self) -> list[tuple[str, ConfigMapKey]]:
        """(spec field under dataset, reference) of each ConfigMap key the trainer reads:
        the training data's and the eval set's."""
        found = [("dataset.configMap", self.config_map)]
        if self.eval is not None:
            found.append(("dataset.eval.configMap", self.eval.config_map))
        return [(field, ref) for field, ref in found if ref is not None]

    @property
    def source_kind(self) -> str:
        return next(s for s in _SOURCES if getattr(self, s) is not None)
