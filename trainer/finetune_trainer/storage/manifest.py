"""The manifest that makes a checkpoint count: every file with its size and sha256, the step,
and the fingerprint of the config that wrote it. It is written last, so its presence (and
its checksums matching) is what "complete" means, on a filesystem and on S3 alike."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from .fsutil import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 4 * 1024 * 1024

ArtifactKind = Literal["checkpoint", "final_model", "merged_16bit"]


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str = Field(description="Path relative to the artifact's directory, '/'-separated.")
    size: int
    sha256: str


class Manifest(BaseModel):
    """What a complete checkpoint, final adapter or merged export holds."""

    model_config = ConfigDict(extra="ignore")

    format: int = MANIFEST_FORMAT
    kind: ArtifactKind
    step: int
    fingerprint: str
    files: list[ManifestFile]
    started_at: str = Field(description="When writing the artifact began (UTC, ISO 8601).")
    completed_at: str = Field(description="When the manifest was written (UTC, ISO 8601).")
    trainer_version: str = __version__

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class ManifestError(Exception):
    """A manifest is missing, unreadable, or does not match the files beside it."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _relative_files(root: Path) -> list[Path]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root)
            if rel.as_posix() != MANIFEST_NAME:
                found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def build_manifest(
    root: Path, *, kind: ArtifactKind, step: int, fingerprint: str, started_at: str
) -> Manifest:
    """Hash every file under ``root`` (except the manifest itself)."""
    files = [
        ManifestFile(
            path=rel.as_posix(), size=(root / rel).stat().st_size, sha256=sha256_file(root / rel)
        )
        for rel in _relative_files(root)
    ]
    return Manifest(
        kind=kind,
        step=step,
        fingerprint=fingerprint,
        files=files,
        started_at=started_at,
        completed_at=utc_now(),
    )


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically into ``root``; the artifact counts from here on."""
    path = root / MANIFEST_NAME
    atomic_write_text(path, manifest.to_json())
    return path


def parse_manifest(text: str | bytes) -> Manifest:
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise ManifestError(f"{MANIFEST_NAME} is not a valid manifest: {problem}") from None


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} (the write never finished)") from None
    return parse_manifest(text)


def verify_files(root: Path, manifest: Manifest, *, checksums: bool = True) -> None:
    """Raise ManifestError naming the first file that is missing, has the wrong size, or
    (with ``checksums``) the wrong sha256."""
    for entry in manifest.files:
        path = root / entry.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ManifestError(f"{entry.path} is missing") from None
        if size != entry.size:
            raise ManifestError(f"{entry.path} has {size} bytes, the manifest says {entry.size}")
        if checksums and sha256_file(path) != entry.sha256:
            raise ManifestError(f"{entry.path} does not match its sha256 checksum")


def verify_dir(root: Path, *, checksums: bool = True) -> Manifest:
    """Read and check the manifest of the artifact in ``root``; return it when it holds."""
    manifest = read_manifest(root)
    verify_files(root, manifest, checksums=checksums)
    return manifest
