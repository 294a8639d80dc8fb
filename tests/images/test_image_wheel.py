"""The project wheel each image installs, built from exactly what its wheel stage copies
(no Docker engine here): the shared API and that image's own program with its entry point;
the operator image holds nothing of the trainer and the trainer image nothing of the
operator, and neither holds the local control plane, which is test infrastructure."""

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


@pytest.mark.parametrize(
    "dockerfile, program, entry_point",
    [
        ("Dockerfile", "finetune_operator", "finetune-operator = finetune_operator.runner:main"),
        ("Dockerfile.trainer", "finetune_trainer", "finetune-train = finetune_trainer.cli:main"),
    ],
)
def test_the_image_wheel_holds_the_product_and_not_the_test_harness(
    dockerfile: str, program: str, entry_point: str, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    sources = wheel_stage_copies(REPO / dockerfile)
    assert "pyproject.toml" in sources and "api/" in sources, sources
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
    code = {p for p in packages if not p.endswith(".dist-info")}
    assert code == {"finetune_api", program}, packages
    assert entry_point in entry_points
