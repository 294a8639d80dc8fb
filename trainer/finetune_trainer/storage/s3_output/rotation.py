"""saveTotalLimit on S3: after a checkpoint's upload, the oldest complete checkpoints beyond
the limit are deleted from the output prefix."""

from __future__ import annotations

import logging

from ..checkpoints import checkpoint_name, steps_to_rotate_out
from .prefix import OutputPrefix

log = logging.getLogger(__name__)


class CheckpointRotation:
    """Keeps at most ``save_total_limit`` complete checkpoints under ``remote`` (None: all)."""

    def __init__(self, remote: OutputPrefix, save_total_limit: int | None) -> None:
        self.remote = remote
        self.save_total_limit = save_total_limit

    def after_upload(self, uploaded_step: int) -> None:
        if self.save_total_limit is None:
            return
        steps = self.remote.checkpoint_steps()
        # Manifests above the step just uploaded are never counted: no need to read them.
        complete = [s for s in steps if s <= uploaded_step and self.remote.has_manifest(s)]
        for step in steps_to_rotate_out(
            steps, complete, self.save_total_limit, upto=uploaded_step, protect={uploaded_step}
        ):
            log.info(
                "rotating out %s (saveTotalLimit=%d)",
                self.remote.uri(checkpoint_name(step)),
                self.save_total_limit,
            )
            self.remote.store.delete_prefix(self.remote.key(checkpoint_name(step)))
