"""The container "runtime" step of the node agent: run one container's command in its own
mount and UTS namespaces, with each volume bind-mounted at its exact mountPath.

Run as `python -m finetune_localcluster.podexec SPEC.json` by the node agent (test
infrastructure standing in for kubelet + a container runtime). It:

1. unshares a mount namespace (all mounts private, so nothing leaks to the host) and a UTS
   namespace (the hostname is the pod's, as in a container);
2. builds a root for the container: an in-memory tmpfs holding a bind mount of every entry
   of the host's `/`, so the command sees the host's programs and the project's
   environment. Where a mountPath needs a directory or file that does not exist (e.g.
   `/etc/finetune`, `/scratch`, `/dev/termination-log`), the directory that would hold it
   is "shadowed": replaced, inside this namespace only, by a tmpfs that bind-mounts each of
   its original entries. So the container sees its mounts exactly where the pod spec puts
   them, and the host's filesystem gains no mount points;
3. bind-mounts each volume (read-only where asked), pivots into the new root, sets the
   hostname, and execs the command with the container's environment.

If anything fails before exec, a JSON error goes to the spec's `start_error_path` and the
process exits with 128, which the agent reports as a container start error."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import stat
import sys
from pathlib import PurePosixPath
from typing import Any

# Linux constants (x86_64 and arm64 share these values).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
START_ERROR_EXIT_CODE = 128

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} -> {target}",
    )


def _bind(source: str, target: str, read_only: bool = False) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


class ContainerRoot:
    """The container's root directory tree, assembled under `path` (a tmpfs)."""

    def __init__(self, path: str, shadow_dir: str) -> None:
        self.path = path
        self.shadow_dir = shadow_dir
        self._shadows = 0
        # Directories whose entries live only in this namespace: the root tmpfs, shadowed
        # directories, and directories created inside those. Anything else is the host's.
        self._private: set[str] = {path}

    def build(self) -> None:
        """Mount the tmpfs and bind every entry of the host's root into it."""
        os.makedirs(self.path, exist_ok=True)
        _mount("tmpfs", self.path, "tmpfs", MS_NOSUID, "mode=0755")
        self._populate(self.path, "/")

    def _populate(self, target_dir: str, source_dir: str) -> None:
        """Recreate each entry of source_dir in target_dir: symlinks are copied, everything
        else is bind-mounted (directories recursively, keeping their submounts)."""
        for name in os.listdir(source_dir):
            source = os.path.join(source_dir, name)
            target = os.path.join(target_dir, name)
            try:
                info = os.lstat(source)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
                continue
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target)
                os.chmod(target, stat.S_IMODE(info.st_mode))
            else:
                open(target, "w").close()
            try:
                _bind(source, target)
            except OSError:
                # An entry that cannot be bound (a vanished socket, a racing temp file) is
                # left as an empty placeholder rather than failing the container.
                continue

    def _shadow(self, directory: str) -> None:
        """Make `directory` (inside the root) writable to this namespace only: mount a
        tmpfs holding bind mounts of its current entries over it."""
        self._shadows += 1
        staging = os.path.join(self.shadow_dir, str(self._shadows))
        os.makedirs(staging, exist_ok=True)
        info = os.stat(directory)
        _mount("tmpfs", staging, "tmpfs", MS_NOSUID, f"mode={stat.S_IMODE(info.st_mode):o}")
        self._populate(staging, directory)
        _bind(staging, directory)
        self._private.add(directory)

    def resolve(self, container_path: str) -> str:
        """The path inside the root that `container_path` names, following symlinks as
        the kernel would inside the container (absolute links are relative to the root)."""
        parts = list(PurePosixPath(container_path).parts[1:])
        current = self.path
        hops = 0
        while parts:
            name = parts.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if current != self.path:
                    current = os.path.dirname(current)
                continue
            candidate = os.path.join(current, name)
            if os.path.islink(candidate):
                hops += 1
                if hops > 40:
                    raise OSError(f"too many symlinks resolving {container_path}")
                link = os.readlink(candidate)
                if link.startswith("/"):
                    current = self.path
                parts = list(PurePosixPath(link).parts[1 if link.startswith("/") else 0 :]) + parts
                continue
            current = candidate
        return current

    def ensure(self, container_path: str, is_dir: bool) -> str:
        """Create the mount point `container_path` (a directory or an empty file) inside
        the root, shadowing the nearest host directory rather than writing into it."""
        target = self.resolve(container_path)
        if os.path.lexists(target):
            return target
        parent = self.resolve(str(PurePosixPath(container_path).parent))
        if not os.path.isdir(parent):
            self.ensure(str(PurePosixPath(container_path).parent), is_dir=True)
            parent = self.resolve(str(PurePosixPath(container_path).parent))
        if parent not in self._private:
            self._shadow(parent)
        if is_dir:
            os.mkdir(target)
            self._private.add(target)
        else:
            open(target, "w").close()
        return target

    def pivot(self) -> None:
        """Make the assembled tree the process's root and drop the host's root."""
        os.chdir(self.path)
        arch = os.uname().machine
        _check(_libc.syscall(SYS_PIVOT_ROOT[arch], b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")


def _prepare_root(spec: dict[str, Any]) -> None:
    root = ContainerRoot(spec["root_dir"], spec["shadow_dir"])
    root.build()
    # Parents before children, so a mount inside another volume lands on top of it.
    mounts = sorted(spec["mounts"], key=lambda m: len(PurePosixPath(m["target"]).parts))
    for mount in mounts:
        is_dir = os.path.isdir(mount["source"])
        target = root.ensure(mount["target"], is_dir=is_dir)
        if os.path.isdir(target) != is_dir:
            raise OSError(
                f"cannot mount {'a directory' if is_dir else 'a file'} at {mount['target']}:"
                f" it is {'a directory' if os.path.isdir(target) else 'a file'}"
            )
        _bind(mount["source"], target, read_only=bool(mount.get("read_only")))
    # The project's environment plays the image: put back any part a volume covered.
    for path in spec.get("image_paths", []):
        if any(_covers(mount["target"], path) for mount in mounts) and os.path.isdir(path):
            _bind(path, root.ensure(path, is_dir=True))
    root.pivot()


def _covers(mount_target: str, path: str) -> bool:
    target = mount_target.rstrip("/") or "/"
    return path == target or path.startswith(target + "/")


_error_fd: int | None = None


def _fail(spec: dict[str, Any], reason: str, message: str) -> None:
    # Written through a descriptor opened before the pivot: the error file's host path may
    # be hidden by then (under a volume, or outside the new root).
    if _error_fd is not None:
        os.write(_error_fd, json.dumps({"reason": reason, "message": message}).encode())
    print(f"{reason}: {message}", file=sys.stderr)
    sys.exit(START_ERROR_EXIT_CODE)


def _find_executable(command: str, path_env: str) -> str | None:
    if "/" in command:
        return command if os.access(command, os.X_OK) else None
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec: dict[str, Any] = json.load(handle)
    # Die with the agent's worker thread, as a container dies with its runtime shim.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec["parent_pid"]:
        sys.exit(START_ERROR_EXIT_CODE)
    global _error_fd
    # Not inherited by the command (Python opens descriptors close-on-exec).
    _error_fd = os.open(spec["start_error_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _prepare_root(spec)
        hostname = spec["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        os.chdir(spec["working_dir"])
    except OSError as error:
        _fail(spec, "RunContainerError", f"failed to create container: {error}")
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    executable = _find_executable(argv[0], env.get("PATH", os.defpath))
    if executable is None:
        _fail(
            spec,
            "StartError",
            f'exec: "{argv[0]}": executable file not found in $PATH',
        )
    try:
        os.execve(executable, argv, env)  # type: ignore[arg-type]
    except OSError as error:
        _fail(spec, "StartError", f'exec: "{argv[0]}": {error.strerror}')


if __name__ == "__main__":
    main()
