"""Where the control plane's binaries are: built from Go modules by build-binaries.sh into a
cache directory keyed on their versions (a second build is a no-op)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "build-binaries.sh"
BUILD_COMMAND = "localcluster/build-binaries.sh (or `make binaries`)"
REQUIRED = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
    "versitygw",
    "promtool",
)
# Set to use binaries from another directory (e.g. a CI cache) instead of building them.
BIN_DIR_ENV = "FTO_BIN_DIR"
# Refreshed by every user of a bin directory: build-binaries.sh removes another key's
# directory only once its stamp is 7 days old.
USED_STAMP = ".last-used"


class BinariesUnavailable(RuntimeError):
    """The binaries are not built and building them failed."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the local cluster runs."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kube_scheduler(self) -> Path:
        return self.path("kube-scheduler")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    @property
    def versitygw(self) -> Path:
        return self.path("versitygw")

    @property
    def promtool(self) -> Path:
        return self.path("promtool")

    def mark_used(self) -> None:
        """Refresh the directory's last-used stamp, so that no build of another key removes
        it while this process may still start binaries from it (best effort: a directory
        this process cannot write to keeps no stamp)."""
        with contextlib.suppress(OSError):
            (self.directory / USED_STAMP).touch()

    def missing(self) -> list[str]:
        return [name for name in REQUIRED if not os.access(self.path(name), os.X_OK)]


_cached: Binaries | None = None


def find_binaries(build: bool = True) -> Binaries:
    """Return the binaries, running the (cached, idempotent) build script when needed, and
    mark their directory used (each call, also when the answer is cached).

    Raises BinariesUnavailable naming what is missing and the command that builds it."""
    global _cached
    if _cached is not None:
        _cached.mark_used()
        return _cached
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        found = Binaries(Path(override))
    elif build:
        result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BinariesUnavailable(
                f"building the control plane binaries failed (run {BUILD_COMMAND}):\n"
                + result.stderr[-3000:]
            )
        found = Binaries(Path(result.stdout.strip().splitlines()[-1]))
    else:
        raise BinariesUnavailable(f"binaries not located; run {BUILD_COMMAND}")
    missing = found.missing()
    if missing:
        raise BinariesUnavailable(
            f"missing {', '.join(missing)} in {found.directory}; run {BUILD_COMMAND}"
        )
    found.mark_used()
    _cached = found
    return found
