"""The termination message: one JSON object, written on every exit, that the kubelet keeps
and the operator copies into the FineTuneJob's status (contract.TerminationMessage)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from finetune_api.contract import (
    TERMINATION_MESSAGE_PATH,
    TRAINER_REASONS,
    Env,
    ExitCode,
    TerminationMessage,
)

log = logging.getLogger(__name__)

EXIT_CODES: dict[str, ExitCode] = {
    "succeeded": ExitCode.SUCCEEDED,
    "failed": ExitCode.FAILED,
    "interrupted": ExitCode.INTERRUPTED,
    "invalid_input": ExitCode.INVALID_INPUT,
}


def termination_path() -> Path | None:
    """``$FTO_TERMINATION_LOG`` when set, else the kubelet's file when it exists and is
    writable (it is created by the kubelet; outside Kubernetes nothing is written there)."""
    explicit = os.environ.get(Env.TERMINATION_LOG)
    if explicit:
        return Path(explicit)
    default = Path(TERMINATION_MESSAGE_PATH)
    if default.is_file() and os.access(default, os.W_OK):
        return default
    return None


def write_termination_message(message: TerminationMessage, path: Path | None) -> None:
    """Write the message; a failure to write is logged, never raised (the exit code still
    tells the operator what happened). Its reason is always one of the contract's
    ``TrainerReason``s: one outside them is a bug, logged and replaced by the generic
    reason of the status, as the operator would read it anyway."""
    if message.reason not in TRAINER_REASONS:
        log.error(
            "termination reason %r is not one of the contract's; writing %s instead",
            message.reason,
            message.known_reason,
        )
        message = message.model_copy(update={"reason": message.known_reason})
    text = message.encode()
    log.info("termination message: %s", text)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)


def exit_code_for(message: TerminationMessage) -> ExitCode:
    return EXIT_CODES[message.status]
