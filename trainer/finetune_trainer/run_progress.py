"""What the run has done so far, shared by the training callbacks and the exit path, so a
failure at any point still reports the newest checkpoint and the last loss.

The fields are the termination message's own (``report``): the run fills them in as it
goes, and each exit adds its status, reason and text."""

from __future__ import annotations

from finetune_api.contract import (
    CheckpointRef,
    TerminationMessage,
    TerminationStatus,
    TrainerReason,
)


class RunProgress:
    def __init__(self) -> None:
        # The message the run would end with if it stopped now without saying why; every
        # exit replaces status, reason and text (message()).
        self.report = TerminationMessage(status="failed", reason=TrainerReason.TRAINING_FAILED)
        # Training stopped early on a stop signal (set by the callbacks).
        self.interrupted = False

    @property
    def checkpoint(self) -> CheckpointRef | None:
        """The newest durable checkpoint: set from the upload thread as each upload
        finishes, and read by the exit path once uploads are done."""
        return self.report.checkpoint

    @checkpoint.setter
    def checkpoint(self, ref: CheckpointRef | None) -> None:
        self.report.checkpoint = ref

    def message(
        self, status: TerminationStatus, reason: TrainerReason, text: str
    ) -> TerminationMessage:
        return self.report.model_copy(update={"status": status, "reason": reason, "message": text})
