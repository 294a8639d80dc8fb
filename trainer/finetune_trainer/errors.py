"""Errors that mean "the input is wrong": retrying cannot help, so the trainer exits with
``ExitCode.INVALID_INPUT`` and the Job fails fast. Everything else is retried."""

from __future__ import annotations


class InvalidInput(Exception):
    """Bad config or bad data. ``reason`` is a CamelCase word for status conditions; the
    message names the field or row and says what to fix."""

    reason = "InvalidInput"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class InvalidConfig(InvalidInput):
    reason = "InvalidConfig"


class InvalidDataset(InvalidInput):
    reason = "InvalidDataset"


class InvalidModel(InvalidInput):
    reason = "InvalidModel"


class IncompatibleCheckpoint(InvalidInput):
    """The output location holds checkpoints written under a different training config."""

    reason = "IncompatibleCheckpoint"
