"""Each image's lock file is closed and installable on the image's platform, as pip's own
resolver proves against PyPI: every pin exists as a wheel for CPython 3.12 on manylinux
x86_64 with the locked hash, and --require-hashes finds no dependency outside the lock.
Nothing is downloaded but metadata (the torch and CUDA wheels weigh gigabytes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from .lockfile import LOCK_TOOL, REPO, locked_versions, resolve_lock

find_python = LOCK_TOOL.find_python

# Both images run CPython 3.12 (python:3.12 slim; Ubuntu 24.04 in the CUDA image).
IMAGE_PYTHON = "3.12"


@pytest.mark.slow
@pytest.mark.parametrize("image", ["operator", "trainer"])
def test_pip_installs_exactly_the_lock_on_the_image_platform(image: str, tmp_path: Path) -> None:
    interpreter = find_python(IMAGE_PYTHON)
    if interpreter is None:
        pytest.skip(
            f"needs a CPython {IMAGE_PYTHON} interpreter (pyenv's or on PATH): pip evaluates "
            "dependency markers against the interpreter it runs under"
        )
    lock = REPO / "requirements" / f"{image}.txt"
    installs = resolve_lock(lock, interpreter, IMAGE_PYTHON, tmp_path / "report.json")
    resolved = {
        canonicalize_name(str(item["metadata"]["name"])): Version(str(item["metadata"]["version"]))  # type: ignore[index]
        for item in installs
    }
    assert resolved == locked_versions(lock, IMAGE_PYTHON)
    lock_text = lock.read_text()
    for item in installs:
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]  # type: ignore[index]
        assert digest in lock_text, f"{item['metadata']['name']}: wheel hash not locked"  # type: ignore[index]
