"""Fixtures of the chart tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_localcluster.binaries import Binaries


@pytest.fixture(scope="session")
def helm(localcluster_binaries: Binaries) -> Path:
    """The helm binary built with the local control plane's binaries."""
    return localcluster_binaries.helm
