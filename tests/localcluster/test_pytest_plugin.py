"""The fixtures' answer to missing control plane binaries: a skip by default, an error when
FTO_REQUIRE_CLUSTER=1 (as `make test` sets it). Run in a separate pytest, since this session
may already hold the binaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from finetune_localcluster.binaries import BIN_DIR_ENV
from finetune_localcluster.pytest_plugin import REQUIRE_CLUSTER_ENV


def _pytest_without_binaries(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one test that needs the binaries, with FTO_BIN_DIR naming an empty directory."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
    (tmp_path / "test_needs_binaries.py").write_text(
        "def test_needs_binaries(localcluster_binaries):\n    pass\n"
    )
    (tmp_path / "no-binaries").mkdir()
    base = {k: v for k, v in os.environ.items() if k not in (BIN_DIR_ENV, REQUIRE_CLUSTER_ENV)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "finetune_localcluster.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-rs",
            "test_needs_binaries.py",
        ],
        cwd=tmp_path,
        env={**base, BIN_DIR_ENV: str(tmp_path / "no-binaries"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_binaries_skip_by_default(tmp_path: Path) -> None:
    result = _pytest_without_binaries(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "missing etcd" in result.stdout, result.stdout


def test_missing_binaries_are_an_error_when_the_cluster_is_required(tmp_path: Path) -> None:
    result = _pytest_without_binaries(tmp_path, **{REQUIRE_CLUSTER_ENV: "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert f"{REQUIRE_CLUSTER_ENV}=1 requires them" in result.stdout, result.stdout
    assert "missing etcd" in result.stdout, result.stdout
