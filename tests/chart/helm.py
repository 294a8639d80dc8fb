"""Running the chart through the real helm binary (built by localcluster/build-binaries.sh)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finetune-operator"
# Render for the Kubernetes version the local control plane runs: the locally built helm
# does not carry the default version that release builds stamp in.
KUBE_VERSION = re.search(
    r"^KUBE_VERSION=(v[0-9.]+)",
    (REPO / "localcluster" / "build-binaries.sh").read_text(),
    re.MULTILINE,
).group(1)  # type: ignore[union-attr]


def run_helm(
    helm: Path, args: Sequence[str], *, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """helm ARGS; on failure (with check) the assertion shows helm's own message."""
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template_args(
    values_file: Path | None, release: str, namespace: str, chart: Path | str
) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    if values_file is not None:
        args += ["--values", str(values_file)]
    return args


def template(
    helm: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "fto",
    namespace: str = "finetune-system",
    chart: Path | str = CHART,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with ``values`` (a dict written to a values file)."""
    with tempfile.TemporaryDirectory() as scratch:
        values_file = None
        if values is not None:
            values_file = Path(scratch) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values))
        return run_helm(helm, template_args(values_file, release, namespace, chart), check=check)


def render(
    helm: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "fto",
    namespace: str = "finetune-system",
    chart: Path | str = CHART,
) -> list[dict[str, Any]]:
    """The objects `helm template` renders, in order."""
    result = template(helm, values, release=release, namespace=namespace, chart=chart)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``) among ``objects``."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The operator container's literal environment (valueFrom entries left out)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
