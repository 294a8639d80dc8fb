"""Find the checkpoint to resume from: the newest complete one whose files verify.

Candidates are tried newest first. One that is incomplete (no manifest) or corrupt (a size
or checksum differs) is skipped with a logged reason, and the previous one is tried. One
that cannot be read right now (an I/O or network error) ends the attempt instead, to be
retried: falling back past it would throw away training it most likely still holds. A
checkpoint written under a different config fingerprint is refused outright: resuming it
would silently mix two trainings, so the output location must change instead.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from .errors import IncompatibleCheckpoint, output_access
from .remote_errors import SafeMessage, bounded, failure_summary
from .storage.manifest import Manifest, ManifestError
from .storage.targets import OutputTarget

log = logging.getLogger(__name__)


class CheckpointUnreadable(OSError, SafeMessage):
    """A checkpoint could not be read for a reason outside it (storage or network); the
    attempt fails (exit 1) and the Job's retry reads it again."""


@dataclass(frozen=True)
class ResumePoint:
    step: int
    path: Path
    uri: str
    manifest: Manifest


def incompatible(what: str, uri: str, found: str, expected: str) -> IncompatibleCheckpoint:
    return IncompatibleCheckpoint(
        f"{what} {uri} was written by another run with a different training config "
        f"(fingerprint {bounded(found, 80)}, this config is {expected}); two runs must not "
        "share one output, and resuming it would mix two trainings. Use a new output path "
        "(output.path, output.pvc.path or output.s3.uri) for this config, delete the old "
        "output if it is no longer needed, or restore the config that wrote it."
    )


def check_output_fingerprints(
    target: OutputTarget, fingerprint: str, also_accepted: Collection[str] = ()
) -> None:
    """Refuse (IncompatibleCheckpoint) an output holding any complete artifact -- a
    checkpoint, the final adapter or the merged export -- written under another config:
    resume looks at the newest checkpoint only, and overwriting an older one, or the final
    adapter, would destroy another run's result."""
    accepted = {fingerprint, *also_accepted}
    with output_access(f"output {target.uri_base}"):
        for name, manifest in target.complete_artifacts():
            if manifest.fingerprint not in accepted:
                raise incompatible(name, target.uri(name), manifest.fingerprint, fingerprint)


def find_resume_point(
    target: OutputTarget, fingerprint: str, also_accepted: Collection[str] = ()
) -> ResumePoint | None:
    """The newest usable checkpoint, or None when there is none (a fresh start). Its
    fingerprint must be ``fingerprint`` or one of ``also_accepted`` (the same config as an
    older trainer fingerprinted it)."""
    rejected: list[str] = []
    for candidate in target.resume_candidates():
        name = f"checkpoint-{candidate.step}"
        try:
            with output_access(f"output {candidate.uri}"):
                path, manifest = candidate.fetch()
        except ManifestError as exc:
            reason = f"{name} is not usable: {exc}"
            log.warning("%s; falling back to the previous checkpoint", reason)
            rejected.append(reason)
            continue
        except OSError as exc:
            raise CheckpointUnreadable(
                f"{name} at {candidate.uri} could not be read ({failure_summary(exc)}); not "
                "falling back to an older checkpoint, which would discard the training it "
                "holds: the next attempt reads it again"
            ) from exc
        if manifest.fingerprint != fingerprint and manifest.fingerprint not in also_accepted:
            raise incompatible("checkpoint", candidate.uri, manifest.fingerprint, fingerprint)
        if manifest.step != candidate.step:
            reason = f"{name} has a manifest for step {manifest.step}"
            log.warning("%s; falling back to the previous checkpoint", reason)
            rejected.append(reason)
            continue
        log.info("resuming from %s (step %d) at %s", name, manifest.step, candidate.uri)
        return ResumePoint(manifest.step, path, candidate.uri, manifest)
    if rejected:
        log.warning(
            "none of the %d checkpoints found is usable (%s); starting from step 0",
            len(rejected),
            "; ".join(rejected),
        )
    return None
