"""Errors that mean "the input is wrong": retrying cannot help, so the trainer exits with
``ExitCode.INVALID_INPUT`` and the Job fails fast. Everything else is retried."""

from __future__ import annotations

import errno

# What an I/O call fails with when the trainer's user may not do it: the same on every
# attempt, so retrying only spends the Job's backoff limit.
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


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


def access_denied(exc: OSError, where: str) -> InvalidConfig | None:
    """The InvalidConfig for a permission or read-only refusal at ``where`` (the config
    field), None for any other I/O error (those may pass and are retried)."""
    if exc.errno not in _ACCESS_ERRNOS:
        return None
    path = f" {exc.filename}" if exc.filename else ""
    return InvalidConfig(
        f"{where}: the trainer may not write or read{path} ({exc.strerror}); make the volume "
        "writable for the trainer's user (the pod's fsGroup owns it when the volume supports "
        "ownership changes; otherwise chown it) or choose another location"
    )
