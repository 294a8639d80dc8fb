"""Retry with exponential backoff, for uploads and downloads that a flaky network breaks."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..remote_errors import brief

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th wait is ``base_delay * 2**n`` (capped at
    ``max_delay``) with up to 25% jitter so many pods do not retry in lockstep."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, failures: int) -> float:
        raw = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        return float(raw * (1 + random.uniform(0, 0.25)))


DEFAULT_RETRY = RetryPolicy()


def with_retries(
    action: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    fatal: Callable[[BaseException], bool] = lambda exc: False,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action`` until it succeeds or ``policy.attempts`` tries have failed; the last
    error propagates, as does at once an error for which ``fatal`` is true (a missing
    object, denied access: waiting will not change the answer). ``what`` names the
    operation in log lines (never a credential); the errors are logged bounded."""
    failures = 0
    while True:
        try:
            return action()
        except retry_on as exc:
            if fatal(exc):
                raise
            failures += 1
            if failures >= policy.attempts:
                log.error("%s failed after %d attempts: %s", what, failures, brief(exc))
                raise
            wait = policy.delay(failures)
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.1fs",
                what,
                failures,
                policy.attempts,
                brief(exc),
                wait,
            )
            sleep(wait)
