"""What the run has done so far, shared by the training callbacks and the exit path, so a
failure at any point still reports the newest checkpoint and the last loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune_api.contract import (
    CheckpointRef,
    TerminationMessage,
    TerminationStatus,
    TrainerReason,
)


@dataclass
class RunProgress:
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    checkpoint: CheckpointRef | None = None
    adapter_uri: str | None = None
    merged_uri: str | None = None
    resumed_from_step: int | None = None
    interrupted: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def message(
        self, status: TerminationStatus, reason: TrainerReason, text: str
    ) -> TerminationMessage:
        return TerminationMessage(
            status=status,
            reason=reason,
            message=text,
            step=self.step,
            total_steps=self.total_steps,
            loss=self.loss,
            checkpoint=self.checkpoint,
            adapter_uri=self.adapter_uri,
            merged_uri=self.merged_uri,
            resumed_from_step=self.resumed_from_step,
        )
