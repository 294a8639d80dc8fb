"""The names and shapes of a model's tensors, read from its safetensors headers (a few KB
per file; for a Hub model, fetched with range requests) without loading any weight. The
dry run checks lora.targetModules against them, so a misspelt name is caught before a GPU
is ever asked for."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

from .errors import InvalidModel
from .lora_args import check_target_names
from .sources import ModelSource

log = logging.getLogger(__name__)

Shapes = dict[str, list[int]]

# The safetensors format caps a header at 100 MB; a larger length means a corrupt file.
_HEADER_LIMIT = 100 * 1024 * 1024


def read_header(path: Path) -> Shapes:
    """The tensor shapes one safetensors file declares."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        raw = handle.read(length) if 0 < length <= _HEADER_LIMIT else b""
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise InvalidModel(
            f"{path} is not a safetensors file (its header cannot be read); replace it with "
            "the file save_pretrained writes"
        )
    return {
        name: list(info.get("shape") or [])
        for name, info in header.items()
        if name != "__metadata__" and isinstance(info, dict)
    }


def local_shapes(directory: Path) -> Shapes | None:
    """Every tensor of a model directory; None when it holds no safetensors files."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    shapes: Shapes = {}
    for path in files:
        shapes.update(read_header(path))
    return shapes


def hub_shapes(repo: str, revision: str | None, token: str | None) -> Shapes | None:
    """Every tensor of a Hub model; None when the headers cannot be had (no network, a
    model without safetensors): the check is then left to training, which makes it too."""
    try:
        from huggingface_hub import get_safetensors_metadata

        metadata = get_safetensors_metadata(repo, revision=revision, token=token)
    except Exception as exc:
        from .remote_errors import details

        log.warning("lora.targetModules not checked: %s's tensor names: %s", repo, details(exc))
        return None
    return {
        name: list(info.shape)
        for file in metadata.files_metadata.values()
        for name, info in file.tensors.items()
    }


def target_names(shapes: Shapes) -> tuple[set[str], set[str]]:
    """(every name a module or parameter path uses, the names worth adapting: those of 2-D
    weights, i.e. linear layers, and of 3-D expert weights)."""
    present = {segment for name in shapes for segment in name.split(".")}
    adaptable = set()
    for name, shape in shapes.items():
        parts = name.split(".")
        if len(parts) > 1 and parts[-1] == "weight" and len(shape) == 2:
            adaptable.add(parts[-2])
        elif len(shape) == 3:
            adaptable.add(parts[-1])
    return present, adaptable


def check_lora_targets(targets: list[str], model: ModelSource, token: str | None) -> bool:
    """Raise InvalidConfig for a target the checkpoint has no layer for; False when the
    checkpoint's tensor names could not be read, so nothing was checked."""
    if model.is_local:
        shapes = local_shapes(Path(model.name_or_path))
    else:
        shapes = hub_shapes(model.name_or_path, model.revision, token)
    if not shapes:
        return False
    present, adaptable = target_names(shapes)
    check_target_names(targets, present, adaptable)
    return True
