"""Errors that mean "the input is wrong": retrying cannot help, so the trainer exits with
``ExitCode.INVALID_INPUT`` and the Job fails fast. Everything else is retried."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from finetune_api.contract import TrainerReason

# What an I/O call fails with when the trainer's user may not do it: the same on every
# attempt, so retrying only spends the Job's backoff limit.
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class InvalidInput(Exception):
    """Bad config or bad data. ``reason`` is a CamelCase word for status conditions; the
    message names the field or row and says what to fix."""

    reason: TrainerReason = TrainerReason.INVALID_INPUT

    def __init__(self, message: str, *, reason: TrainerReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class InvalidConfig(InvalidInput):
    reason = TrainerReason.INVALID_CONFIG


class InvalidDataset(InvalidInput):
    reason = TrainerReason.INVALID_DATASET


class InvalidModel(InvalidInput):
    reason = TrainerReason.INVALID_MODEL


class IncompatibleCheckpoint(InvalidInput):
    """The output location holds complete artifacts written under a different training
    config: another run's output, which this run must neither resume nor overwrite."""

    reason = TrainerReason.INCOMPATIBLE_CHECKPOINT


class OutputInUse(InvalidInput):
    """Another live trainer holds the output location's lease."""

    reason = TrainerReason.OUTPUT_IN_USE


@contextmanager
def output_access(where: str) -> Iterator[None]:
    """Turn a permission or read-only refusal at ``where`` (the config field) into
    InvalidConfig; any other I/O error passes through (it may pass, and is retried)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _ACCESS_ERRNOS:
            raise
        path = f" {exc.filename}" if exc.filename else ""
        raise InvalidConfig(
            f"{where}: the trainer may not write or read{path} ({exc.strerror}); make the "
            "volume writable for the trainer's user (the pod's fsGroup owns it when the volume "
            "supports ownership changes; otherwise chown it) or choose another location"
        ) from exc


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors behind it (``__cause__``, else ``__context__``), each once:
    libraries wrap the error that says what happened (boto3's upload failures, transformers'
    OSErrors around the Hub's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
