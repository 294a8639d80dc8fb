"""A small reader of Dockerfile instructions (continuation lines joined, comments dropped)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def instructions(path: Path) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip(), start))
    return found


def build_args(path: Path) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    args: dict[str, str] = {}
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, value = instruction.arguments.split("=", 1)
            args[name] = value
    return args


def base_images(path: Path) -> list[str]:
    """Every FROM image with ARG defaults substituted (stage references excluded)."""
    args = build_args(path)
    stages: set[str] = set()
    images = []
    for instruction in instructions(path):
        if instruction.keyword != "FROM":
            continue
        words = instruction.arguments.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def final_stage(path: Path) -> list[Instruction]:
    """The instructions of the last stage (what the image is)."""
    all_instructions = instructions(path)
    last_from = max(i for i, ins in enumerate(all_instructions) if ins.keyword == "FROM")
    return all_instructions[last_from:]


def shell_words(instruction: Instruction) -> list[str]:
    return shlex.split(instruction.arguments.replace("&&", " && "))
