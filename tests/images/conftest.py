"""Fixtures and markers of the image tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: installs or resolves packages from PyPI (tens of seconds; the pip cache helps)",
    )
