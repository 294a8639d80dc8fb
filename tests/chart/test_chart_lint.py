"""helm lint, values rejected by values.schema.json, and the packaged chart."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm import CHART, KUBE_VERSION, REPO, only, render, run_helm, template

NON_DEFAULT_VALUES: dict[str, Any] = {
    "watchNamespaces": ["team-a", "team-b"],
    "crds": {"keep": False},
    "image": {"digest": "sha256:" + "ab" * 32},
    "operator": {"logFormat": "plain", "replicas": 0, "priorityClassName": "high"},
    "trainer": {"nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "networkPolicy": {"enabled": True},
    "metrics": {"trainer": {"podMonitor": {"enabled": True}}},
}


@pytest.mark.parametrize("values", [None, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_helm_lint_strict(helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp_path / "values.yaml")]
    result = run_helm(helm, args)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


# Each values file must be refused, with helm naming the offending path.
REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("two replicas", {"operator": {"replicas": 2}}, "/operator/replicas"),
    ("a typo", {"rbac": {"creat": True}}, "creat"),
    ("a string for a boolean", {"crds": {"keep": "yes"}}, "/crds/keep"),
    ("a tag as digest", {"image": {"digest": "latest"}}, "/image/digest"),
    ("an unknown log format", {"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ("a bad namespace", {"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    (
        "a non-string node label",
        {"trainer": {"nodeSelector": {"gpu": True}}},
        "/trainer/nodeSelector/gpu",
    ),
    (
        "a malformed toleration",
        {"trainer": {"tolerations": [{"operator": "Maybe"}]}},
        "/trainer/tolerations/0/operator",
    ),
]


@pytest.mark.parametrize(("why", "values", "path"), REJECTED, ids=[r[0] for r in REJECTED])
def test_invalid_values_are_rejected(
    helm: Path, why: str, values: dict[str, Any], path: str
) -> None:
    result = template(helm, values, check=False)
    assert result.returncode != 0, f"{why} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert path in result.stderr, result.stderr


def test_the_example_rejected_values_file_is_rejected(helm: Path) -> None:
    """tests/chart/rejected-values.yaml: a hand-written file a user could have made."""
    result = run_helm(
        helm,
        [
            "template",
            "x",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--values",
            str(Path(__file__).with_name("rejected-values.yaml")),
        ],
        check=False,
    )
    assert result.returncode != 0
    assert "/operator/replicas" in result.stderr
    assert "additional properties 'watchNamespace' not allowed" in result.stderr


def test_the_packaged_chart_carries_the_crd(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, ["package", str(CHART), "--destination", str(tmp_path)])
    (package,) = tmp_path.glob("finetune-operator-*.tgz")
    with tarfile.open(package) as archive:
        names = set(archive.getnames())
    assert "finetune-operator/files/crds/finetunejobs.yaml" in names
    assert "finetune-operator/values.schema.json" in names
    assert "finetune-operator/README.md.tmpl" not in names  # the README's source stays home
    crd = only(render(helm, chart=package), "CustomResourceDefinition")
    generated = yaml.safe_load((REPO / "crds" / "finetunejobs.yaml").read_text())
    assert crd["spec"] == generated["spec"]


def test_notes_tell_how_to_apply_the_example() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl apply -f examples/finetunejob.yaml" in notes
    assert "kind: FineTuneJob" in notes  # and a minimal one inline, for a copy and paste
    example = yaml.safe_load((REPO / "examples" / "finetunejob.yaml").read_text())
    # The claim and the namespace the notes create are the ones the example uses.
    assert f"kubectl create namespace {example['metadata']['namespace']}" in notes
    assert example["spec"]["output"]["pvc"]["claimName"] in notes
    assert f"finetunejob/{example['metadata']['name']}" in notes
