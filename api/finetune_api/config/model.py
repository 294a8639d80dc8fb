"""The base model to fine-tune and how to load it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import HubRepoId, LocalPath, ShortString, SpecModel, cel
from .sources import PvcPath, S3Location, SecretKeyRef

DEFAULT_MODEL = "unsloth/gpt-oss-20b"
MAX_SEQ_LENGTH_LIMIT = 131072

_SOURCES = ("name", "path", "pvc", "s3")


class ModelSpec(SpecModel):
    """The base model. Give exactly one source: a Hub id (name), a local path, a PVC path or
    an S3 prefix; with none, the Hub id unsloth/gpt-oss-20b is used."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.name), has(self.path), has(self.pvc), has(self.s3)]"
                    ".filter(x, x).size() <= 1",
                    "set at most one of model.name, model.path, model.pvc and model.s3",
                ),
                cel(
                    "!has(self.tokenSecretRef) || !(has(self.path) || has(self.pvc) || "
                    "has(self.s3))",
                    "model.tokenSecretRef is only used with model.name (a Hub download)",
                ),
                cel(
                    "!has(self.revision) || !(has(self.path) || has(self.pvc) || has(self.s3))",
                    "model.revision is only used with model.name (a Hub download)",
                ),
            ]
        }
    }

    name: HubRepoId | None = Field(
        None,
        description="Hugging Face Hub repository id. Default: unsloth/gpt-oss-20b when no "
        "other source is set.",
    )
    revision: ShortString | None = Field(
        None, description="Hub branch, tag or commit to pin (recommended for reproducibility)."
    )
    path: LocalPath | None = Field(
        None, description="A directory inside the trainer image or on the trainer's machine."
    )
    pvc: PvcPath | None = Field(
        None, description="A model directory on a PersistentVolumeClaim (air-gapped clusters)."
    )
    s3: S3Location | None = Field(
        None, description="A model directory under an S3 prefix, downloaded before loading."
    )
    max_seq_length: Annotated[int, Field(ge=16, le=MAX_SEQ_LENGTH_LIMIT)] = Field(
        1024,
        description="Context length in tokens for training; longer rows are handled by "
        "dataset.overlongPolicy. Default: 1024; gpt-oss supports up to 131072.",
    )
    load_in_4bit: bool = Field(
        True,
        alias="loadIn4bit",
        description="Load the base weights in 4-bit (QLoRA, bitsandbytes). Default: true.",
    )
    offload_embedding: bool | None = Field(
        None,
        description="Keep the input embedding table in host memory when training on a GPU "
        "with Unsloth; each batch's rows are looked up there and copied to the GPU. Moves "
        "vocabulary x hidden x 2 bytes (1.1 GiB for gpt-oss-20b) from GPU to host memory, "
        "so the container's memory limit needs that much room, and computes the same "
        "values, but slows every step. Unset (the default): in host memory only when the "
        "GPU has no room for it. Ignored on the CPU path.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Compute dtype; auto picks bfloat16 where the GPU supports it. Default: auto.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding a Hugging Face token for gated or private models; "
        "passed to the trainer as HF_TOKEN.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [s for s in _SOURCES if getattr(self, s) is not None]
        if len(given) > 1:
            raise ValueError(
                f"set at most one of model.name, model.path, model.pvc and model.s3 "
                f"(got {', '.join(given)})"
            )
        if not given:
            self.name = DEFAULT_MODEL
        if self.token_secret_ref is not None and self.name is None:
            raise ValueError("model.tokenSecretRef is only used with model.name (a Hub download)")
        if self.revision is not None and self.name is None:
            raise ValueError("model.revision is only used with model.name (a Hub download)")
        return self

    @property
    def source_kind(self) -> str:
        return next(s for s in _SOURCES if getattr(self, s) is not None)

    @property
    def display_name(self) -> str:
        """The model as a title names it: the Hub id, else the last part of its location
        (gpt-oss-20b-unsloth-bnb-4bit for pvc path models/gpt-oss-20b-unsloth-bnb-4bit)."""
        if self.name is not None:
            return self.name
        if self.pvc is not None:
            location = self.pvc.path or self.pvc.claim_name
        elif self.s3 is not None:
            location = self.s3.uri[len("s3://") :]
        else:
            location = self.path or "model"
        return location.rstrip("/").rsplit("/", 1)[-1] or location
