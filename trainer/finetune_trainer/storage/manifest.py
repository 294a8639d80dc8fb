"""The manifest that makes a checkpoint count: every file with its size and sha256, the step,
and the fingerprint of the config that wrote it. It is written last, so its presence (and
its checksums matching) is what "complete" means, on a filesystem and on S3 alike.

Whoever can write the output location can write a manifest too, so one is trusted only as
far as it is checked: every entry must name a regular file inside the artifact's directory
(no absolute path, no '..', no symbolic link, no device or FIFO, which would never finish
reading); the files present must be exactly the files listed; and the list must hold what
the artifact needs (for a checkpoint its adapter weights and trainer state). Anything else
makes the artifact incomplete, and resume falls back to an older one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import __version__
from .fsutil import NotRegularFile, atomic_write_text, open_regular
from .paths import relative_name_problem

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 4 * 1024 * 1024
# Bounds on what a manifest may make the trainer read: a real checkpoint lists a few dozen
# files in a few KiB.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_FILES = 100_000

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TRAINER_STATE = "trainer_state.json"

ArtifactKind = Literal["checkpoint", "final_model", "merged_16bit"]


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str = Field(description="Path relative to the artifact's directory, '/'-separated.")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        problem = relative_name_problem(value)
        if problem is not None:
            raise ValueError(f"entry {value!r} {problem}")
        if value == MANIFEST_NAME:
            raise ValueError(f"entry {value!r} is the manifest itself")
        return value


class Manifest(BaseModel):
    """What a complete checkpoint, final adapter or merged export holds."""

    model_config = ConfigDict(extra="ignore")

    format: int = MANIFEST_FORMAT
    kind: ArtifactKind
    step: int
    fingerprint: str
    files: list[ManifestFile] = Field(max_length=MAX_MANIFEST_FILES)
    started_at: str = Field(description="When writing the artifact began (UTC, ISO 8601).")
    completed_at: str = Field(description="When the manifest was written (UTC, ISO 8601).")
    trainer_version: str = __version__

    @field_validator("files")
    @classmethod
    def _unique(cls, files: list[ManifestFile]) -> list[ManifestFile]:
        seen: set[str] = set()
        for entry in files:
            if entry.path in seen:
                raise ValueError(f"entry {entry.path!r} is listed twice")
            seen.add(entry.path)
        return files

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def incomplete_reason(self) -> str | None:
        """Why the files listed cannot make this kind of artifact, or None."""
        if not self.files:
            return "its manifest lists no files"
        names = {f.path for f in self.files}
        if self.kind in ("checkpoint", "final_model") and not names & set(ADAPTER_WEIGHTS):
            return f"its manifest lists no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"
        if self.kind == "checkpoint" and TRAINER_STATE not in names:
            return f"its manifest lists no trainer state ({TRAINER_STATE})"
        if self.kind == "merged_16bit" and "config.json" not in names:
            return "its manifest lists no config.json"
        return None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class ManifestError(Exception):
    """A manifest is missing, unreadable, or does not match the files beside it."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total <= limit and (chunk := os.read(fd, _CHUNK)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a regular file (never of what a symbolic link points at)."""
    with open_regular(path) as (fd, _info):
        return _sha256_fd(fd)


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
    """The manifest in ``text``; ManifestError when it is too large, not a manifest, or
    names a file outside its directory."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ManifestError(f"{MANIFEST_NAME} is not a valid manifest: {problem}") from None


def complete_manifest(text: str | bytes) -> Manifest:
    """:func:`parse_manifest`, also refusing one that lists too little for its kind."""
    manifest = parse_manifest(text)
    reason = manifest.incomplete_reason()
    if reason is not None:
        raise ManifestError(f"incomplete: {reason}")
    return manifest


def _not_regular(name: str, exc: NotRegularFile) -> ManifestError:
    return ManifestError(f"{name} {exc.strerror}, not a regular file inside the checkpoint")


def read_manifest(root: Path) -> Manifest:
    """The manifest in ``root`` (parsed and complete for its kind, files not checked)."""
    path = root / MANIFEST_NAME
    try:
        with open_regular(path) as (fd, _info):
            text = _read_fd(fd, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} (the write never finished)") from None
    except NotRegularFile as exc:
        raise _not_regular(MANIFEST_NAME, exc) from None
    return complete_manifest(text)


def _present_files(root: Path) -> set[str]:
    """The regular files below ``root`` (the manifest aside), as '/'-separated names.
    Raises ManifestError for anything else there: a symbolic link (to a file or a
    directory), a device, a FIFO, a socket; or more entries than a manifest may list."""
    found: set[str] = set()
    pending = [root]
    seen = 0
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                seen += 1
                if seen > 2 * MAX_MANIFEST_FILES:  # directories count too
                    raise ManifestError(f"holds more than {2 * MAX_MANIFEST_FILES} entries")
                name = Path(entry.path).relative_to(root).as_posix()
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append(Path(entry.path))
                elif stat.S_ISREG(mode):
                    if name != MANIFEST_NAME:
                        found.add(name)
                elif stat.S_ISLNK(mode):
                    raise ManifestError(f"{name} is a symbolic link, not a regular file")
                else:
                    raise ManifestError(f"{name} is not a regular file (a device, FIFO or socket)")
                if len(found) > MAX_MANIFEST_FILES:
                    raise ManifestError(f"holds more than {MAX_MANIFEST_FILES} files")
    return found


def verify_files(root: Path, manifest: Manifest, *, checksums: bool = True) -> None:
    """Raise ManifestError naming the first problem: ``root`` not a directory of its own;
    a listed file missing, or not a regular file inside ``root``; a file present but not
    listed; a size, or (with ``checksums``) a sha256, that differs. Never follows a
    symbolic link nor reads anything but the regular files listed."""
    try:
        mode = root.lstat().st_mode
    except FileNotFoundError:
        raise ManifestError(f"{root.name} is missing") from None
    if not stat.S_ISDIR(mode):
        raise ManifestError(f"{root.name} is not a directory (a symbolic link or a file)")
    present = _present_files(root)
    listed = {entry.path for entry in manifest.files}
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing:
        raise ManifestError(f"{missing[0]} is missing")
    if extra:
        raise ManifestError(f"{extra[0]} is not in the manifest")
    base = root.resolve()
    for entry in manifest.files:
        path = root / entry.path
        if path.resolve() != base / entry.path:  # a directory above it became a link
            raise ManifestError(f"{entry.path} resolves outside the checkpoint directory")
        try:
            with open_regular(path) as (fd, info):
                if info.st_size != entry.size:
                    raise ManifestError(
                        f"{entry.path} has {info.st_size} bytes, the manifest says {entry.size}"
                    )
                if checksums and _sha256_fd(fd) != entry.sha256:
                    raise ManifestError(f"{entry.path} does not match its sha256 checksum")
        except FileNotFoundError:
            raise ManifestError(f"{entry.path} is missing") from None
        except NotRegularFile as exc:
            raise _not_regular(entry.path, exc) from None


def verify_dir(root: Path, *, checksums: bool = True) -> Manifest:
    """Read and check the manifest of the artifact in ``root``; return it when it holds."""
    manifest = read_manifest(root)
    verify_files(root, manifest, checksums=checksums)
    return manifest
