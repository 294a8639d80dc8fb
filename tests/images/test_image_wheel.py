"""The project wheel both images install, built from exactly what their wheel stage copies
(no Docker engine here): it holds the operator and the trainer with their entry points,
and not the local control plane, which is test infrastructure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .dockerfile import instructions, shell_words

REPO = Path(__file__).resolve().parents[2]


def wheel_stage_copies(dockerfile: Path) -> list[str]:
    """The sources of the COPY instructions of the stage named ``wheel``."""
    sources: list[str] = []
    stage = None
    for instruction in instructions(dockerfile):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            stage = words[2] if len(words) == 3 else None
        elif instruction.keyword == "COPY" and stage == "wheel":
            sources += shell_words(instruction)[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.trainer"])
def test_the_image_wheel_holds_the_product_and_not_the_test_harness(
    dockerfile: str, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    sources = wheel_stage_copies(REPO / dockerfile)
    assert "pyproject.toml" in sources and "operator/" in sources, sources
    for source in sources:
        origin, target = REPO / source, context / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", "out", "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (wheel,) = (context / "out").glob("finetune_operator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith("entry_points.txt")
        )
    packages = {name.split("/", 1)[0] for name in names if "/" in name}
    assert {"finetune_operator", "finetune_trainer"} <= packages
    assert not any(p.startswith("finetune_localcluster") for p in packages), packages
    assert "finetune-operator = finetune_operator.runner:main" in entry_points
    assert "finetune-train = finetune_trainer.cli:main" in entry_points
