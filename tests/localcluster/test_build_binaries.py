"""build-binaries.sh's cache handling, with a stand-in `go` that writes empty executables:
what a failed build leaves behind, and which other keys' directories a build removes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from finetune_localcluster.binaries import BUILD_SCRIPT, REQUIRED

# Answers each `go` call the script makes; `go build`/`go install` write an executable
# named as the real one would be, or fail for the one named in FAKE_GO_FAIL.
FAKE_GO = r"""#!/usr/bin/env bash
set -euo pipefail
make_binary() {
  [[ "$(basename "$1")" != "${FAKE_GO_FAIL:-}" ]] || { echo "fake go: failing $1" >&2; exit 1; }
  printf '#!/bin/sh\n' > "$1"; chmod +x "$1"
}
case "$1 ${2:-}" in
  "env GOVERSION") echo go0.0-fake ;;
  "mod download")
    printf 'module k8s.io/kubernetes\n\ngo 1.24\n\nreplace (\n'\
'\tk8s.io/api => ./staging/src/k8s.io/api\n)\n' > "$PWD/kubernetes.mod"
    echo "{\"GoMod\": \"$PWD/kubernetes.mod\"}" ;;
  "build "*)
    while [[ "$1" != -o ]]; do shift; done
    make_binary "$2" ;;
  "install "*)
    for pkg; do :; done
    name="${pkg%@*}"; make_binary "$GOBIN/${name##*/}" ;;
  *) ;;
esac
"""

Build = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def build(tmp_path: Path) -> Build:
    """build(fail="") runs the script with the stand-in go and a cache under tmp_path."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "go").write_text(FAKE_GO)
    (fake_bin / "go").chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def run(fail: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PATH": f"{fake_bin}:{os.environ['PATH']}",
            "FTO_CACHE_DIR": str(tmp_path / "cache"),
            "TMPDIR": str(scratch),
            "FAKE_GO_FAIL": fail,
        }
        return subprocess.run(
            [str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )

    return run


def _entries(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_a_failed_build_leaves_nothing_and_a_new_key_replaces_the_old(
    build: Build, tmp_path: Path
) -> None:
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    stale = cache / "bin-0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "kubectl").write_text("")
    (cache / "bin-fedcba9876543210.tmp").mkdir()  # an interrupted build's leftover

    failed = build(fail="etcd")
    assert failed.returncode != 0, failed.stderr
    assert "fake go: failing" in failed.stderr
    # Neither the scratch directory nor the partial bin-<key>.tmp survive; a failed build
    # prunes nothing.
    assert not any(scratch.iterdir())
    assert _entries(cache) == {stale.name, "bin-fedcba9876543210.tmp", ".build.lock"}

    built = build()
    assert built.returncode == 0, built.stderr
    bin_dir = Path(built.stdout.strip().splitlines()[-1])
    assert all(os.access(bin_dir / name, os.X_OK) for name in REQUIRED)
    assert _entries(cache) == {bin_dir.name, ".build.lock"}, built.stderr
    assert not any(scratch.iterdir())

    again = build()
    assert (again.returncode, again.stdout) == (0, built.stdout)
    assert "building" not in again.stderr


def test_a_stale_directory_in_use_is_kept_until_a_later_run(build: Build, tmp_path: Path) -> None:
    stale = tmp_path / "cache" / "bin-0123456789abcdef"
    stale.mkdir(parents=True)
    sleep = shutil.which("sleep")
    assert sleep
    shutil.copy(sleep, stale / "sleep")
    # What a test session's etcd is to its bin directory.
    user = subprocess.Popen([str(stale / "sleep"), "60"])
    try:
        built = build()
        assert built.returncode == 0, built.stderr
        assert stale.is_dir() and "a running process uses it" in built.stderr
    finally:
        user.kill()
        user.wait()
    # The next run, even one that builds nothing, removes it.
    again = build()
    assert again.returncode == 0, again.stderr
    assert not stale.exists()
    assert "building" not in again.stderr
