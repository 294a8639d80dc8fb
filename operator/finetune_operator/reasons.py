"""The reasons a FineTuneJob's status and Events can carry, as one fixed set.

A reason becomes a Prometheus label value (``finetune_operator_events_total{reason}``), and
a label that any tenant can set to any string is a series per string: a trainer image that
writes a new reason into its termination message on every run would grow the operator's
memory and every scrape without limit. So reasons from outside the operator are checked
against the set below, and anything else is counted under ``Other``.
"""

from __future__ import annotations

from finetune_api import contract
from finetune_api.status import Reason

# Reasons taken over from Kubernetes: the Job controller's conditions, the scheduler's and
# the kubelet's pod states.
KUBERNETES_REASONS: frozenset[str] = frozenset(
    {
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.POD_FAILURE_POLICY,
        Reason.FAILED_INDEXES,
        Reason.MAX_FAILED_INDEXES_EXCEEDED,
        Reason.SUCCESS_POLICY,
        Reason.JOB_FAILED,
        Reason.UNSCHEDULABLE,
        Reason.SCHEDULER_ERROR,
        Reason.ERR_IMAGE_PULL,
        Reason.IMAGE_PULL_BACK_OFF,
        Reason.INVALID_IMAGE_NAME,
        Reason.CREATE_CONTAINER_CONFIG_ERROR,
        Reason.CREATE_CONTAINER_ERROR,
        Reason.CRASH_LOOP_BACK_OFF,
    }
)
# Reasons the operator decides itself: every other Reason.
OPERATOR_REASONS: frozenset[str] = frozenset(Reason) - KUBERNETES_REASONS
# Reasons the trainer reports in its termination message (the contract's fixed set).
TRAINER_REASONS = contract.TRAINER_REASONS
KNOWN_REASONS = OPERATOR_REASONS | KUBERNETES_REASONS | TRAINER_REASONS
OTHER = "Other"


def metric_reason(reason: str) -> str:
    """``reason`` if it is one of the known reasons, else ``Other``."""
    return str(reason) if reason in KNOWN_REASONS else OTHER
