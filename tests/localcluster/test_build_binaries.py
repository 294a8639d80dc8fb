"""build-binaries.sh's cache handling, with a stand-in `go` that writes empty executables:
what a failed build leaves behind, which other keys' directories a build removes (those
unused for seven days), and who marks a directory used."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from finetune_localcluster import binaries
from finetune_localcluster.binaries import BIN_DIR_ENV, BUILD_SCRIPT, REQUIRED, USED_STAMP

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


def _other_key(cache: Path, key: str, *, used_days_ago: float | None) -> Path:
    """Another key's complete-looking bin directory, last used that long ago (None: built
    before stamps existed, so it has none)."""
    directory = cache / f"bin-{key}"
    directory.mkdir(parents=True)
    for name in REQUIRED:
        (directory / name).write_text("")
    if used_days_ago is not None:
        _set_last_use(directory, used_days_ago)
    return directory


def _set_last_use(directory: Path, days_ago: float) -> None:
    stamp = directory / USED_STAMP
    stamp.touch()
    when = time.time() - days_ago * 86400
    os.utime(stamp, (when, when))


def _days_since_use(directory: Path) -> float:
    return (time.time() - (directory / USED_STAMP).stat().st_mtime) / 86400


def test_a_failed_build_leaves_nothing_and_a_new_key_replaces_an_unused_one(
    build: Build, tmp_path: Path
) -> None:
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    unused = _other_key(cache, "0123456789abcdef", used_days_ago=8)
    (cache / "bin-fedcba9876543210.tmp").mkdir()  # an interrupted build's leftover

    failed = build(fail="etcd")
    assert failed.returncode != 0, failed.stderr
    assert "fake go: failing" in failed.stderr
    # Neither the scratch directory nor the partial bin-<key>.tmp survive; a failed build
    # prunes nothing.
    assert not any(scratch.iterdir())
    assert _entries(cache) == {unused.name, "bin-fedcba9876543210.tmp", ".build.lock"}

    built = build()
    assert built.returncode == 0, built.stderr
    bin_dir = Path(built.stdout.strip().splitlines()[-1])
    assert all(os.access(bin_dir / name, os.X_OK) for name in REQUIRED)
    assert _days_since_use(bin_dir) < 0.01
    assert _entries(cache) == {bin_dir.name, ".build.lock"}, built.stderr
    assert "unused for 8 days" in built.stderr
    assert not any(scratch.iterdir())

    again = build()
    assert (again.returncode, again.stdout) == (0, built.stdout)
    assert "building" not in again.stderr


def test_another_keys_directory_used_within_seven_days_is_kept(
    build: Build, tmp_path: Path
) -> None:
    # No process runs from either: a test run handed one may not have started etcd yet, be
    # between two control planes, or run in another PID namespace sharing the cache.
    cache = tmp_path / "cache"
    recent = _other_key(cache, "0123456789abcdef", used_days_ago=6.9)
    unstamped = _other_key(cache, "1111111111111111", used_days_ago=None)
    built = build()
    assert built.returncode == 0, built.stderr
    assert recent.is_dir() and unstamped.is_dir(), built.stderr
    assert 6.8 < _days_since_use(recent) < 7  # pruning does not refresh it
    # One built before stamps existed gets one: its seven days start now.
    assert _days_since_use(unstamped) < 0.01
    assert "no record of its last use" in built.stderr

    # A later run, even one that builds nothing, removes each once seven days have passed.
    _set_last_use(recent, 7.1)
    again = build()
    assert again.returncode == 0, again.stderr
    assert not recent.exists() and unstamped.is_dir(), again.stderr
    assert "building" not in again.stderr


def test_reporting_an_existing_build_marks_it_used(build: Build) -> None:
    built = build()
    assert built.returncode == 0, built.stderr
    bin_dir = Path(built.stdout.strip().splitlines()[-1])
    _set_last_use(bin_dir, 30)
    again = build()
    assert (again.returncode, again.stdout) == (0, built.stdout), again.stderr
    assert _days_since_use(bin_dir) < 0.01


def test_a_build_in_progress_keeps_its_tmp_directory(build: Build, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = build()
    assert built.returncode == 0, built.stderr
    in_progress = cache / "bin-fedcba9876543210.tmp"
    in_progress.mkdir()
    # What a build of another key holds while it writes its bin-<key>.tmp.
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reported = build()
        assert reported.returncode == 0, reported.stderr
        assert in_progress.is_dir()
    # Once no build holds the lock, a leftover .tmp is an interrupted build's.
    again = build()
    assert again.returncode == 0, again.stderr
    assert not in_progress.exists(), again.stderr


def test_resolving_the_binaries_marks_their_directory_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "bin-prebuilt"
    directory.mkdir()
    for name in REQUIRED:
        (directory / name).write_text("")
        (directory / name).chmod(0o755)
    monkeypatch.setenv(BIN_DIR_ENV, str(directory))
    monkeypatch.setattr(binaries, "_cached", None)
    found = binaries.find_binaries()
    assert found.directory == directory
    assert _days_since_use(directory) < 0.01
    # Each later call refreshes it too (a session resolves them again for each control
    # plane), though the answer is cached.
    _set_last_use(directory, 30)
    assert binaries.find_binaries() is found
    assert _days_since_use(directory) < 0.01
