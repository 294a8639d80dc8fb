"""Images are never pulled by the local node agent: a container's command runs in the
project's own environment. Two registry behaviours are simulated so tests can exercise
them:

- an image whose registry host ends in `.invalid` (a TLD reserved to never resolve,
  RFC 2606) fails to pull, exactly as it would on a real node, with kubelet's reasons
  (ErrImagePull, then ImagePullBackOff) and messages;
- a *local image* (``LocalImages.add(reference, bin_dir)``) puts its own executables first
  on the container's PATH: a test can give a FineTuneJob an image whose ``finetune-train``
  is whatever a tenant's image might run (a hostile metrics endpoint, say), while the
  operator builds the same pod it always does.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class LocalImages:
    """Image references that stand for a directory of executables on this machine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bins: dict[str, str] = {}

    def add(self, reference: str, bin_dir: Path) -> None:
        with self._lock:
            self._bins[reference] = os.path.realpath(bin_dir)

    def remove(self, reference: str) -> None:
        with self._lock:
            self._bins.pop(reference, None)

    def bin_dir(self, reference: str) -> str | None:
        with self._lock:
            return self._bins.get(reference)


def registry_host(image: str) -> str:
    """The registry host of an image reference ("" for Docker Hub short names)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.split(":", 1)[0]
    return ""


def simulated_pull_error(image: str) -> str | None:
    """The pull error a real node would report for this image, or None if it "pulls"."""
    host = registry_host(image)
    if host.endswith(".invalid"):
        return (
            f'failed to pull and unpack image "{image}": failed to resolve reference '
            f'"{image}": failed to do request: Head "https://{host}/v2/": '
            f"dial tcp: lookup {host}: no such host"
        )
    return None
