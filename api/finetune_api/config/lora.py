"""The LoRA adapter trained on top of the (quantized) base model."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from .base import SpecModel

# Attention projections plus the MoE experts' fused projections; on gpt-oss Unsloth puts
# LoRA on the experts through gate_up_proj and down_proj.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")

ModuleName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.*-]+$")
]


class LoraSpec(SpecModel):
    """The LoRA adapter. Defaults reproduce the original example: rank 8, alpha 16, no
    dropout, on attention and MoE expert projections."""

    rank: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="LoRA rank r. Default: 8.")
    alpha: Annotated[int, Field(ge=1, le=4096)] = Field(
        16, description="LoRA alpha (scaling = alpha / rank). Default: 16."
    )
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="Dropout on the LoRA path. Default: 0 (what Unsloth optimizes for)."
    )
    target_modules: Annotated[list[ModuleName], Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        description="Module names to adapt. Default: q_proj, k_proj, v_proj, o_proj, "
        "gate_up_proj, down_proj.",
    )
    use_rslora: bool = Field(
        False, description="Rank-stabilized LoRA scaling (alpha / sqrt(rank)). Default: false."
    )
