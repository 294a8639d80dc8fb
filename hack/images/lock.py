"""Write requirements/*.txt: the exact, hashed, closed set of wheels each image installs.

    python hack/images/lock.py            # resolve against PyPI and rewrite the lock files
    python hack/images/lock.py operator   # only one of them

Each lock is resolved with pip's own resolver (``pip install --dry-run --report``) from the
requirements pyproject.toml declares for that image, for CPython 3.11 and 3.12 on
manylinux x86_64, wheels only. A package resolved to the same version for both Pythons is
pinned once with the hashes of both wheels; otherwise each Python gets its own pin behind
an environment marker. Installing with ``pip install --require-hashes -r`` then fetches
exactly these files and nothing else.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11", "3.12")
# Every manylinux tag a current x86_64 glibc (>= 2.28; Ubuntu 24.04 has 2.39, Debian 13
# has 2.41) accepts, newest first, as pip would on such a machine.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]


@dataclass(frozen=True)
class Lock:
    """One image's lock file and the pyproject requirements it is resolved from."""

    name: str
    extras: tuple[str, ...]
    include_base: bool = True
    build_system: bool = False

    @property
    def path(self) -> Path:
        return REPO / "requirements" / f"{self.name}.txt"


LOCKS = {
    "operator": Lock("operator", ("operator",)),
    "trainer": Lock("trainer", ("trainer", "gpu")),
    # setuptools and wheel, to build the project's own wheel in the image builds.
    "build": Lock("build", (), include_base=False, build_system=True),
}


def input_requirements(lock: Lock, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The requirement strings pyproject.toml declares for ``lock``."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    requirements = list(project["dependencies"]) if lock.include_base else []
    for extra in lock.extras:
        requirements += project["optional-dependencies"][extra]
    if lock.build_system:
        requirements += data["build-system"]["requires"]
    return requirements


@dataclass
class Pin:
    version: str
    hashes: set[str] = field(default_factory=set)


def find_python(version: str) -> str | None:
    """A working CPython ``version`` interpreter: pyenv's, or one on PATH (pyenv's shims
    are skipped: they fail for versions that are not selected)."""
    candidates = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python")))
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" not in on_path:
        candidates.append(on_path)
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def pip_dry_run(
    interpreter: str, python: str, requirements: Path, report: Path, *extra: str
) -> list[str]:
    """The pip command that resolves ``requirements`` for CPython ``python`` on manylinux
    x86_64, wheels only, writing pip's JSON report and fetching no wheel. pip runs under
    ``interpreter`` (``pip --python``): dependency markers are evaluated against the running
    interpreter, which ``--python-version`` alone does not change. The image tests resolve
    the written locks with the same command (plus ``--require-hashes``)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        interpreter,
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        *extra,
        "--report",
        str(report),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        "cp" + python.replace(".", ""),
        "--only-binary=:all:",
        "-r",
        str(requirements),
    ]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command


def resolve(requirements: list[str], python: str) -> dict[str, Pin]:
    """name -> the version and wheel hash pip picks for CPython ``python`` on linux x86_64."""
    interpreter = find_python(python)
    if interpreter is None:
        raise SystemExit(f"no working python{python} found (~/.pyenv/versions or PATH)")
    with tempfile.TemporaryDirectory() as scratch:
        inputs = Path(scratch) / "requirements.in"
        inputs.write_text("\n".join(requirements) + "\n")
        report = Path(scratch) / "report.json"
        subprocess.run(pip_dry_run(interpreter, python, inputs, report), check=True)
        installs = json.loads(report.read_text())["install"]
    pins = {}
    for item in installs:
        name = canonical(item["metadata"]["name"])
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        pins[name] = Pin(item["metadata"]["version"], {digest})
    return pins


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def render(lock: Lock, per_python: dict[str, dict[str, Pin]], requirements: list[str]) -> str:
    lines = [
        f"# Lock file of the {lock.name} image: every wheel, pinned and hashed, for CPython "
        f"{' and '.join(PYTHONS)} on linux x86_64.",
        "# Generated by `python hack/images/lock.py` (make lock) from pyproject.toml:",
    ]
    lines += [f"#   {requirement}" for requirement in requirements]
    lines.append("# Install with: pip install --require-hashes -r <this file>")
    names = sorted(set().union(*per_python.values()))
    for name in names:
        pins = {python: found[name] for python, found in per_python.items() if name in found}
        versions = {pin.version for pin in pins.values()}
        if len(pins) == len(PYTHONS) and len(versions) == 1:
            hashes = set().union(*(pin.hashes for pin in pins.values()))
            lines += _entry(f"{name}=={versions.pop()}", hashes)
            continue
        for python, pin in sorted(pins.items()):
            lines += _entry(f'{name}=={pin.version} ; python_version == "{python}"', pin.hashes)
    return "\n".join(lines) + "\n"


def _entry(requirement: str, hashes: set[str]) -> list[str]:
    return [f"{requirement} \\"] + [
        f"    --hash=sha256:{digest}" + (" \\" if i < len(hashes) - 1 else "")
        for i, digest in enumerate(sorted(hashes))
    ]


def write_lock(lock: Lock) -> None:
    requirements = input_requirements(lock)
    per_python = {python: resolve(requirements, python) for python in PYTHONS}
    lock.path.parent.mkdir(exist_ok=True)
    lock.path.write_text(render(lock, per_python, requirements))
    print(f"wrote {lock.path.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"locks to write: {', '.join(LOCKS)} (all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(LOCKS)
    if unknown:
        parser.error(f"unknown lock {', '.join(sorted(unknown))}")
    for name in args.names or list(LOCKS):
        write_lock(LOCKS[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
