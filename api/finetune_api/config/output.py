"""Where checkpoints and the trained adapter go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import LocalPath, SpecModel, cel
from .sources import PvcPath, S3Location

DEFAULT_OUTPUT_DIR = "outputs"


def pvc_uri(ref: PvcPath, *names: str) -> str:
    """``pvc://<claim>/<path>/<names...>``: how status and logs name a file or directory
    on a PVC, the same on both sides (the operator's status, the trainer's outputs)."""
    segments = (part.strip("/") for part in (ref.path or "", *names))
    return "pvc://" + "/".join([ref.claim_name, *(s for s in segments if s)])


class OutputSpec(SpecModel):
    """Where checkpoints (checkpoint-N/) and the final adapter (final_model/) are written:
    a local directory (path), a PVC, or an S3 prefix. With S3, a local staging copy is kept
    until each upload completes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.path), has(self.pvc), has(self.s3)].filter(x, x).size() <= 1",
                    "set at most one of output.path, output.pvc and output.s3",
                ),
            ]
        }
    }

    path: LocalPath | None = Field(
        None, description="A local directory. Default: outputs when no other target is set."
    )
    pvc: PvcPath | None = Field(
        None,
        description="A directory on a PVC (mounted read-write). Empty path defaults to "
        "<namespace>/<name>-<uid prefix> so runs never share a directory.",
    )
    s3: S3Location | None = Field(
        None, description="An S3 prefix; checkpoints and the adapter go under it."
    )
    merged_export: Literal["none", "merged_16bit"] = Field(
        "none",
        description="Also export the base model with the adapter merged in 16-bit "
        "(merged_16bit), for serving without PEFT. Default: none.",
    )

    keep: Literal["best", "last"] | None = Field(
        None,
        description="Which weights become final_model: last (the last step's) or best (the "
        "checkpoint with the lowest eval loss; needs dataset.eval). Default: last.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> OutputSpec:
        given = [s for s in ("path", "pvc", "s3") if getattr(self, s) is not None]
        if len(given) > 1:
            raise ValueError(
                f"set at most one of output.path, output.pvc and output.s3 (got {', '.join(given)})"
            )
        if not given:
            self.path = DEFAULT_OUTPUT_DIR
        return self

    def uri(self, *parts: str) -> str:
        """A user-facing address of a file or directory under the output location, the same
        on both sides: pvc://claim/path/..., s3://bucket/prefix/..., or the local path."""
        if self.pvc is not None:
            return pvc_uri(self.pvc, *parts)
        tail = "/".join(p.strip("/") for p in parts if p)
        if self.s3 is not None:
            base = self.s3.uri.rstrip("/")
        else:
            base = (self.path or DEFAULT_OUTPUT_DIR).rstrip("/") or "/"
        return f"{base}/{tail}" if tail else base

    @property
    def target_kind(self) -> str:
        return next(s for s in ("path", "pvc", "s3") if getattr(self, s) is not None)
