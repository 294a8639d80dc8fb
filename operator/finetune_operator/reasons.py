"""The reasons a FineTuneJob's status and Events can carry, as one fixed set.

A reason becomes a Prometheus label value (``finetune_operator_events_total{reason}``), and
a label that any tenant can set to any string is a series per string: a trainer image that
writes a new reason into its termination message on every run would grow the operator's
memory and every scrape without limit. So reasons from outside the operator are checked
against the set below, and anything else is counted under ``Other``.
"""

from __future__ import annotations

from finetune_api import contract

# Reasons the operator decides itself.
OPERATOR_REASONS = frozenset(
    {
        "CreatingJob",
        "WaitingForPod",
        "ContainerCreating",
        "Running",
        "Completing",
        "Restarting",
        "Suspended",
        "WaitingForQueue",
        "Succeeded",
        "InvalidSpec",
        "NotAllowed",
        "ChildConflict",
        "JobRejected",
        "JobDeleted",
        "QuotaExceeded",
        "DatasetConfigMapMissing",
        "StatusRejected",
        "Restarted",
        "Checkpoint",
        "JobCreated",
    }
)
# Reasons taken over from Kubernetes: the Job controller's conditions, the scheduler's and
# the kubelet's pod states.
KUBERNETES_REASONS = frozenset(
    {
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "PodFailurePolicy",
        "FailedIndexes",
        "MaxFailedIndexesExceeded",
        "SuccessPolicy",
        "JobFailed",
        "Unschedulable",
        "SchedulerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)
# Reasons the trainer reports in its termination message (the contract's fixed set).
TRAINER_REASONS = contract.TRAINER_REASONS
KNOWN_REASONS = OPERATOR_REASONS | KUBERNETES_REASONS | TRAINER_REASONS
OTHER = "Other"


def metric_reason(reason: str) -> str:
    """``reason`` if it is one of the known reasons, else ``Other``."""
    return reason if reason in KNOWN_REASONS else OTHER
