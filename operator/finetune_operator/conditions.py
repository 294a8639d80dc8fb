"""metav1.Condition bookkeeping with kstatus semantics.

Conditions written for every FineTuneJob, so kstatus (Flux, kubectl wait, Argo CD's
health check) can read them:

- ``Ready``: True once the adapter is written (Succeeded).
- ``Reconciling``: True while the run is in progress (Pending or Running).
- ``Stalled``: True when the run failed and will not make progress without a new spec, or
  when the operator cannot report on it (its status writes are refused); the phase then
  stays what it was.
- ``Suspended``: True while suspended.

``lastTransitionTime`` changes only when a condition's status flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from finetune_api.safe_text import safe_text
from finetune_api.status import Condition

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SUSPENDED = "Suspended"
CONDITION_TYPES = (READY, RECONCILING, STALLED, SUSPENDED)


def _truth(flag: bool) -> Literal["True", "False"]:
    return "True" if flag else "False"


def conditions_for_phase(
    phase: str,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[dict[str, Any]] | None,
    now: str,
    *,
    stalled: bool = False,
) -> list[dict[str, Any]]:
    """The full condition list for a phase, carrying lastTransitionTime over from
    ``previous`` when a condition's status did not change. ``stalled`` marks a FineTuneJob
    stuck for a reason other than its phase (Stalled, and no longer Reconciling)."""
    stalled = stalled or phase == "Failed"
    # Bounded before the typed model sees it: an over-long message must shorten, not raise.
    message = safe_text(message)
    wanted = {
        READY: phase == "Succeeded",
        RECONCILING: phase in ("Pending", "Running") and not stalled,
        STALLED: stalled,
        SUSPENDED: phase == "Suspended",
    }
    before = {c.get("type"): c for c in previous or []}
    out = []
    for kind in CONDITION_TYPES:
        status = _truth(wanted[kind])
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == status else now
        out.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=since,
            ).to_wire()
        )
    # Keep conditions other writers may have added (none today), after ours.
    out += [c for c in previous or [] if c.get("type") not in CONDITION_TYPES]
    return out
