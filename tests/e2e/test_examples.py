"""Every manifest under examples/ is accepted by the real API server with the CRD installed:
a server-side dry run applies the CRD's schema, defaults and CEL rules, so an example left
behind by a schema change fails here instead of in a user's cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert EXAMPLES, "no examples/*.yaml found"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_passes_a_server_side_dry_run(
    example: Path, cluster: LocalCluster, crd: Path, namespace: str
) -> None:
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert docs, f"{example.name} holds no manifest"
    assert any(d.get("kind") == "FineTuneJob" for d in docs), f"{example.name}: no FineTuneJob"
    # Into this test's namespace rather than the one written in the example (which need not
    # exist here); nothing else in the manifests changes.
    for doc in docs:
        if doc.get("kind") != "Namespace":
            doc.setdefault("metadata", {})["namespace"] = namespace
    result = cluster.kubectl(
        ["apply", "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump_all(docs, sort_keys=False),
        check=False,
    )
    assert result.returncode == 0, f"{example.name} is rejected:\n{result.stderr}"
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
