"""The records of a W&B run file (``run-<id>.wandb``), read with W&B's own protobuf
``Record``. W&B 0.31 no longer ships a Python reader for the file, whose framing is the
LevelDB log format: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
chunks, each a 7-byte header (crc32, length, type) and its bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_FILE_HEADER = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B", "not a W&B run file"
    offset, pending = _FILE_HEADER, b""
    while offset + _CHUNK_HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _CHUNK_HEADER:  # the block's tail is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + _CHUNK_HEADER])
        start = offset + _CHUNK_HEADER
        chunk = data[start : start + length]
        offset = start + length
        if kind == 0 and length == 0:
            break
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def history_rows(path: Path) -> list[dict[str, Any]]:
    """Each ``history`` record of the run file, as {key: JSON text}."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): item.value_json
                    for item in record.history.item
                }
            )
    return rows
