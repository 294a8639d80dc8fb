"""The chart's derived files (values.schema.json, README.md, the CRD copy, the argocd-cm
snippet) are exactly what hack/chart/generate.py makes from their sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "hack" / "chart" / "generate.py"
CHART = REPO / "charts" / "finetune-operator"


def test_generated_files_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_chart_crd_is_the_generated_crd() -> None:
    copy = CHART / "files" / "crds" / "finetunejobs.yaml"
    assert copy.read_bytes() == (REPO / "crds" / "finetunejobs.yaml").read_bytes()


def _generator_module(name: str) -> object:
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(GENERATOR.parent))


def test_a_stale_file_is_reported(tmp_path: Path) -> None:
    """--check fails, naming the file, when a derived file differs from its source."""
    generate = _generator_module("generate")
    expected = generate.expected_files()  # type: ignore[attr-defined]
    crd_copy = generate.CRD_COPY  # type: ignore[attr-defined]
    stale = generate.stale_files  # type: ignore[attr-defined]
    stale_copy = tmp_path / "finetunejobs.yaml"
    stale_copy.write_text(expected[crd_copy].replace("FineTuneJob", "FineTuneJobs", 1))
    assert stale({stale_copy: expected[crd_copy]}) == [stale_copy]
    assert stale({tmp_path / "missing.json": "{}"}) == [tmp_path / "missing.json"]
    assert stale({crd_copy: expected[crd_copy]}) == []


def test_an_undocumented_value_is_refused(tmp_path: Path) -> None:
    annotated_values = _generator_module("annotated_values")
    values = tmp_path / "values.yaml"
    values.write_text("group:\n  # -- Documented.\n  known: 1\n  unknown: 2\n")
    with pytest.raises(ValueError, match=r"group\.unknown: undocumented"):
        annotated_values.load(values)  # type: ignore[attr-defined]


def test_every_documented_value_is_in_the_readme_and_the_schema() -> None:
    annotated_values = _generator_module("annotated_values")
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = annotated_values.load(CHART / "values.yaml")  # type: ignore[attr-defined]
    leaves = [leaf for top in settings for leaf in top.leaves()]
    assert len(leaves) > 40
    for leaf in leaves:
        assert f"| `{leaf.dotted}` |" in readme
        node = schema
        for part in leaf.path:
            node = node["properties"][part]
        assert node["description"] == leaf.description
        assert node["default"] == leaf.default
