"""metav1.Condition bookkeeping with kstatus semantics.

Conditions written for every FineTuneJob, so kstatus (Flux, kubectl wait, Argo CD's
health check) can read them:

- ``Ready``: True once the adapter is written (Succeeded).
- ``Reconciling``: True while the run is in progress (Pending or Running).
- ``Stalled``: True when the run failed and will not make progress without a new spec,
  when a Running trainer has made no progress for spec.lifecycle.progressDeadlineSeconds
  (stall.py), or when the operator cannot report on it (its status writes are refused);
  in the last two the phase stays what it was.
- ``Suspended``: True while suspended.
- ``Complete`` and ``Failed``: True once the run has succeeded or failed, as a batch/v1
  Job says it, so ``kubectl wait --for=condition=Complete`` (or ``=Failed``) works as it
  does for Jobs.

``lastTransitionTime`` changes only when a condition's status flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError

from finetune_api.status import MAX_CONDITIONS, Condition, Phase

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SUSPENDED = "Suspended"
COMPLETE = "Complete"
FAILED = "Failed"
CONDITION_TYPES = (READY, RECONCILING, STALLED, SUSPENDED, COMPLETE, FAILED)


def _truth(flag: bool) -> Literal["True", "False"]:
    return "True" if flag else "False"


def conditions_for_phase(
    phase: Phase,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[dict[str, Any]] | None,
    now: str,
    *,
    stalled: bool = False,
) -> list[Condition]:
    """The full condition list for a phase, carrying lastTransitionTime over from
    ``previous`` (the stored conditions) when a condition's status did not change.
    ``stalled`` marks a FineTuneJob stuck for a reason other than its phase (Stalled, and
    no longer Reconciling)."""
    stalled = stalled or phase == Phase.FAILED
    wanted = {
        READY: phase == Phase.SUCCEEDED,
        RECONCILING: phase in (Phase.PENDING, Phase.RUNNING) and not stalled,
        STALLED: stalled,
        SUSPENDED: phase == Phase.SUSPENDED,
        COMPLETE: phase == Phase.SUCCEEDED,
        FAILED: phase == Phase.FAILED,
    }
    before = {c.get("type"): c for c in previous or []}
    out = []
    for kind in CONDITION_TYPES:
        status = _truth(wanted[kind])
        old = before.get(kind)
        kept = old.get("lastTransitionTime") if old and old.get("status") == status else None
        fields: dict[str, Any] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "last_transition_time": kept or now,
        }
        if generation is not None:  # left out when unknown, as metav1.Condition does
            fields["observed_generation"] = generation
        out.append(Condition(**fields))
    # Keep conditions other writers may have added (none today), after ours, as many as the
    # schema has room for: one more would make every status this operator writes invalid.
    for other in previous or []:
        if len(out) == MAX_CONDITIONS:
            break
        if other.get("type") not in CONDITION_TYPES and (kept_other := _foreign(other)):
            out.append(kept_other)
    return out


def _foreign(condition: dict[str, Any]) -> Condition | None:
    """Another writer's condition as stored, or None when it is not one (the API server
    accepts only conditions of the schema's shape, so nothing it stored is dropped)."""
    try:
        return Condition.model_validate(condition)
    except ValidationError:
        return None
