"""Model backends: Unsloth on CUDA (the product path), transformers + PEFT elsewhere.

Selecting a backend imports torch; choosing Unsloth imports it before transformers, TRL
and PEFT, which Unsloth requires for its patches to apply.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

from ..errors import InvalidConfig
from .base import Backend, Precision

log = logging.getLogger(__name__)

__all__ = ["Backend", "Precision", "select_backend"]


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def select_backend(
    choice: Literal["auto", "unsloth", "transformers"] = "auto", scratch: Path | None = None
) -> Backend:
    """``auto``: Unsloth when a CUDA GPU is present and Unsloth is installed; otherwise
    transformers + PEFT, logged as such. ``unsloth`` is a config error when either is
    missing: the flag asks for what this container lacks, and a retry would not add it.
    ``scratch`` is where Unsloth may write its compiled kernels and merge buffers (it
    defaults to the working directory, which a hardened pod mounts read-only)."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "unsloth" or (choice == "auto" and cuda and unsloth_installed()):
        if not cuda:
            raise InvalidConfig(
                "--backend unsloth needs a CUDA GPU and none is visible; run on a node with "
                "an NVIDIA GPU, or pass --backend auto (or transformers) to train without "
                "Unsloth"
            )
        if not unsloth_installed():
            raise InvalidConfig(
                "--backend unsloth needs the unsloth package, which is not installed; use "
                "the trainer image with the gpu extra, or pass --backend auto (or "
                "transformers) to train without Unsloth"
            )
        if scratch is not None:
            os.environ.setdefault(
                "UNSLOTH_COMPILE_LOCATION", str(scratch / "unsloth_compiled_cache")
            )
        # No usage statistics from a training job: clusters often have no egress, and a
        # job should not phone home unasked.
        os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
        from .unsloth_backend import UnslothBackend

        return UnslothBackend(scratch)
    from .transformers_backend import TransformersBackend

    backend = TransformersBackend(cuda=cuda)
    if choice == "auto":
        why = "no CUDA GPU is visible" if not cuda else "unsloth is not installed"
        log.warning(
            "using the transformers + PEFT backend because %s; Unsloth's speed and memory "
            "savings do not apply (fine for tests and small models)",
            why,
        )
    return backend
