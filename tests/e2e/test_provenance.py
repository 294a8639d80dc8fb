"""status.provenance end to end: FineTuneJobs trained on the local control plane, the
operator's part written while the trainer runs, the whole record when it ends, its digest
equal for two FineTuneJobs of the same spec and moved by one changed data row, and the
same record in provenance.json and the model card beside the adapter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.cluster import LocalCluster

from .ftj import FineTuneJobs
from .test_training import (  # noqa: F401 (fixtures)
    RUN_TIMEOUT,
    claims,
    no_trainer_left_behind,
    tiny_inputs,
)
from .training_helpers import (
    DATASET_FILE,
    INPUT_CLAIM,
    StatusHistory,
    host_path,
    training_spec,
)

pytestmark = pytest.mark.e2e

STEPS = 3  # past warmupSteps (2)
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
TRAINER_FIELDS = (
    "modelSource",
    "modelRevision",
    "datasetSource",
    "datasetDigest",
    "datasetRows",
    "trainerVersion",
    "torchVersion",
    "transformersVersion",
    "peftVersion",
    "trlVersion",
    "gpuModel",
    "gpuCount",
    "adapterManifestDigest",
)
OPERATOR_FIELDS = ("configDigest", "configFingerprint", "image", "imageId")


def _spec() -> dict[str, Any]:
    spec = training_spec(save_steps=STEPS)
    spec["training"]["maxSteps"] = STEPS
    return spec


def _train(ftjs: FineTuneJobs, cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    """Every status ``name`` had, from creation to its outcome (which must be success)."""
    with StatusHistory(cluster, ftjs.namespace, name) as history:
        ftjs.apply(name, _spec())
        status = ftjs.wait_status(
            name,
            lambda s: s.get("phase") in ("Succeeded", "Failed"),
            timeout=RUN_TIMEOUT,
            what=f"{name} to finish training",
        )
        history.wait_for_phase(status["phase"])
    assert status["phase"] == "Succeeded", status
    return history.statuses


def test_provenance_is_recorded_stable_across_reruns_and_moved_by_one_row(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],  # noqa: F811
) -> None:
    first = _train(ftjs, cluster, "prov-first")
    final = first[-1]
    provenance = final["provenance"]
    # The operator's part while the trainer ran, before any trainer's record.
    running = [s.get("provenance") or {} for s in first if s.get("phase") == "Running"]
    assert any(set(OPERATOR_FIELDS) <= p.keys() and "modelRevision" not in p for p in running)

    for field in (*OPERATOR_FIELDS, *TRAINER_FIELDS, "digest"):
        assert provenance.get(field) not in (None, ""), (field, provenance)
    assert provenance["modelSource"] == f"pvc://{INPUT_CLAIM}/tiny-gpt-oss"
    assert provenance["datasetSource"] == f"pvc://{INPUT_CLAIM}/{DATASET_FILE}"
    for field in ("modelRevision", "datasetDigest", "configDigest", "adapterManifestDigest"):
        assert SHA256.match(provenance[field]), (field, provenance[field])
    assert (provenance["gpuModel"], provenance["gpuCount"]) == ("cpu", 0)
    # The local node agent reports the image as its imageID (no registry digest).
    pod_image = ftjs.pods(ftjs.get("prov-first")["metadata"]["uid"])[0]["status"][
        "containerStatuses"
    ][0]["imageID"]
    assert provenance["imageId"] == pod_image and provenance["image"]

    adapter = host_path(final["output"]["adapterUri"], claims)
    document = json.loads((adapter / "provenance.json").read_text(encoding="utf-8"))
    for field in ("modelRevision", "datasetDigest", "datasetRows", "gpuModel"):
        assert document[field] == provenance[field]
    card = (adapter / "README.md").read_text(encoding="utf-8")
    assert provenance["datasetDigest"] in card and provenance["modelRevision"] in card
    assert "More Information Needed" not in card

    # The same spec again, into its own output directory: the same training.
    again = _train(ftjs, cluster, "prov-again")[-1]["provenance"]
    assert again["configDigest"] != provenance["configDigest"]  # its own output path
    for field in ("digest", "modelRevision", "datasetDigest", "configFingerprint"):
        assert again[field] == provenance[field], field

    # One row of the same file changed: the same spec, not the same training.
    data = claims[INPUT_CLAIM] / DATASET_FILE
    lines = data.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    answer = next(m for m in reversed(row["messages"]) if m["role"] == "assistant")
    answer["content"] = "Changed. " + answer["content"]
    data.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n", encoding="utf-8")
    changed = _train(ftjs, cluster, "prov-changed")[-1]["provenance"]
    assert changed["configFingerprint"] == provenance["configFingerprint"]
    assert changed["modelRevision"] == provenance["modelRevision"]
    assert changed["datasetDigest"] != provenance["datasetDigest"]
    assert changed["digest"] != provenance["digest"]
