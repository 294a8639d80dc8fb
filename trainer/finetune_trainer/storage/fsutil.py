"""Durable filesystem writes: fsync files and directories, write small files atomically.

A checkpoint on a PVC must survive a node crash at any instant, so every step that makes a
checkpoint visible (rename, manifest) happens only after the bytes it points at are on disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

# Opening never follows a symbolic link and never waits: a FIFO opened for reading would
# block until a writer came, and a device such as /dev/zero would never end.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """A path that is a symbolic link, a directory, a device, a FIFO or a socket where a
    regular file was expected."""


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """Open ``path`` for reading only if it is a regular file itself (not a symbolic link
    to one); yields the descriptor and its stat. Raises NotRegularFile otherwise, and
    FileNotFoundError when it is missing."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "is a symbolic link", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, "is not a regular file", str(path))
        yield fd, info
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush one file's data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to stable storage. Some filesystems
    (a few network ones) refuse fsync on a directory; that is not an error worth failing a
    training run over, since the rename itself is still atomic there."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below ``root``, directories after their contents."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        base = Path(dirpath)
        for name in filenames:
            fsync_file(base / name)
        fsync_dir(base)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one:
    write a temporary sibling, fsync it, rename it over the target, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_tree(path: Path) -> None:
    """Delete a directory durably: rename it to a hidden name first, so a crash halfway
    through deleting never leaves something that looks like a (broken) checkpoint."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        # Not a directory of ours (a link someone put there): the name goes, never what
        # it points at.
        path.unlink()
        fsync_dir(path.parent)
        return
    if not path.exists():
        return
    doomed = path.with_name(f".deleting-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)
