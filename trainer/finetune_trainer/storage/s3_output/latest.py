"""The ``<prefix>/latest`` pointer: which checkpoint a new attempt resumes from first.

It names a checkpoint whose upload finished, and never moves to a lower step while the one
it names is complete. The one exception is a checkpoint uploaded again under the same name
(a run that fell back to an older checkpoint and reached that step again): ``latest`` first
moves to the newest other complete checkpoint, because the one it named stops being
complete while its prefix is rewritten.

Every change is a conditional write on what was just read (If-Match on its ETag, or
If-None-Match: * when there was none; see S3Store.put_replacing): a change made by another
writer in between is never overwritten blindly, but read and decided again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from ..checkpoints import checkpoint_name
from ..manifest import Manifest, utc_now
from ..s3 import ObjectTooLarge, WriteConflict
from .prefix import OutputPrefix

log = logging.getLogger(__name__)

LATEST_POINTER = "latest"
# The pointer is a small JSON object; anything larger is not one of ours.
MAX_POINTER_BYTES = 64 * 1024
# Conditional writes of the pointer that met another writer's change are decided again
# from what it says now, this many times in all.
_POINTER_ATTEMPTS = 3


class LatestPointer:
    """``latest`` under ``remote``."""

    def __init__(self, remote: OutputPrefix) -> None:
        self.remote = remote
        self.key = remote.key(LATEST_POINTER)
        self.uri = remote.uri(LATEST_POINTER)

    # --- reading -------------------------------------------------------------------------
    def read(self) -> tuple[dict[str, object] | None, str | None]:
        """The pointer's content (None when absent or not ours) and its ETag (None when
        absent)."""
        store = self.remote.store
        try:
            found = store.get_with_etag(self.key, MAX_POINTER_BYTES)
        except ObjectTooLarge as exc:
            log.warning("%s; ignoring it", exc)
            return None, store.head_etag(self.key)
        if found is None:
            return None, None
        raw, etag = found
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("%s is not valid JSON; ignoring it", self.uri)
            return None, etag
        return (value if isinstance(value, dict) else None), etag

    def value(self) -> dict[str, object] | None:
        return self.read()[0]

    def step(self) -> int | None:
        """The step it names, or None when there is no pointer of ours."""
        pointer = self.value()
        step = pointer.get("step") if pointer is not None else None
        return step if isinstance(step, int) else None

    # --- changing ------------------------------------------------------------------------
    def move_to(self, name: str, manifest: Manifest) -> None:
        """Point ``latest`` at the checkpoint just uploaded, unless it names a newer one
        that is complete (a run resumed from an older checkpoint, say because the newer
        one was corrupt: its uploads must not drag the pointer back)."""

        def decide(held: int | None) -> Manifest | None:
            if held is not None and held > manifest.step:
                if self.remote.manifest(checkpoint_name(held)) is not None:
                    log.info("%s stays at checkpoint-%d, newer than %s", self.uri, held, name)
                    return None
                log.info(
                    "%s named checkpoint-%d, which is not complete on S3; moving it to %s",
                    self.uri,
                    held,
                    name,
                )
            return manifest

        self._change(decide)

    def move_off(self, step: int) -> None:
        """``latest`` names ``checkpoint-<step>``, which is about to be deleted and uploaded
        again: point it at the newest other complete checkpoint below, or remove it when
        there is none. It moves back to ``step`` after the upload."""

        def decide(held: int | None) -> Manifest | bool | None:
            if held != step:
                return None  # moved meanwhile: not ours to change any more
            for older in sorted(
                (s for s in self.remote.checkpoint_steps() if s < step), reverse=True
            ):
                manifest = self.remote.manifest(checkpoint_name(older))
                if manifest is not None:
                    log.info(
                        "%s moves back to checkpoint-%d while %s is uploaded again",
                        self.uri,
                        older,
                        self.remote.uri(checkpoint_name(step)),
                    )
                    return manifest
            log.info(
                "removing %s while %s, the only checkpoint it could name, is uploaded again",
                self.uri,
                self.remote.uri(checkpoint_name(step)),
            )
            return False

        self._change(decide)

    def _change(self, decide: Callable[[int | None], Manifest | bool | None]) -> None:
        """Read the pointer, ask ``decide`` (given the step it names) what it should become
        -- a checkpoint's manifest, False to remove it, None to leave it -- and write that
        on condition that the pointer is still what was read; on a conflict, again."""
        conflict: WriteConflict | None = None
        for _attempt in range(_POINTER_ATTEMPTS):
            pointer, etag = self.read()
            step = pointer.get("step") if pointer is not None else None
            wanted = decide(step if isinstance(step, int) else None)
            try:
                if wanted is None:
                    return
                if wanted is False:
                    if etag is not None:
                        self.remote.store.delete_replacing(self.key, etag)
                    return
                assert isinstance(wanted, Manifest)
                self.remote.store.put_replacing(self.key, self._pointing_at(wanted), etag)
                return
            except WriteConflict as exc:
                log.warning("%s; reading %s again", exc, self.uri)
                conflict = exc
        assert conflict is not None
        raise conflict

    def _pointing_at(self, manifest: Manifest) -> bytes:
        name = checkpoint_name(manifest.step)
        value = {
            "step": manifest.step,
            "checkpoint": name,
            "uri": self.remote.uri(name),
            "fingerprint": manifest.fingerprint,
            "updatedAt": utc_now(),
        }
        return json.dumps(value, sort_keys=True).encode()
