"""The run's output prefix on S3: the keys and URIs below it, the checkpoints listed there
and the manifests that say which of them are complete."""

from __future__ import annotations

from ..checkpoints import checkpoint_name, parse_checkpoint_name
from ..manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ManifestError, complete_manifest
from ..s3 import ObjectTooLarge, S3Store, join_key


class OutputPrefix:
    """``<bucket>/<prefix>`` on ``store``, where every artifact is ``<prefix>/<name>/``."""

    def __init__(self, store: S3Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        base = store.uri(prefix) if prefix else f"s3://{store.bucket}"
        self.uri_base = base.rstrip("/")

    def key(self, *parts: str) -> str:
        return join_key(self.prefix, *parts)

    def uri(self, name: str) -> str:
        return f"{self.uri_base}/{name}"

    def checkpoint_steps(self) -> set[int]:
        """The steps of the checkpoints listed under the prefix, complete or not."""
        steps = set()
        for child in self.store.list_children(self.prefix):
            step = parse_checkpoint_name(child)
            if step is not None:
                steps.add(step)
        return steps

    def has_manifest(self, step: int) -> bool:
        key = self.key(checkpoint_name(step), MANIFEST_NAME)
        return self.store.head_etag(key) is not None

    def manifest(self, name: str) -> Manifest | None:
        """The manifest of ``name`` when it is there and complete for its kind (files not
        checked)."""
        try:
            raw = self.store.get_bytes(self.key(name, MANIFEST_NAME), MAX_MANIFEST_BYTES)
            return complete_manifest(raw) if raw is not None else None
        except (ManifestError, ObjectTooLarge):
            return None
