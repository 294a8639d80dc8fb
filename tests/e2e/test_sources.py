"""Every documented input source feeds a real training run: the model from `model.s3` and
the dataset from `dataset.s3` (the local S3 server, credentials from a Secret), and the
dataset from `dataset.configMap` (a real ConfigMap the operator mounts). Each run is checked
against what the trainer read (its log naming the source, the row count only that source
holds, the config fingerprint in the adapter's manifest), so a run that silently trained on
another source fails. Also: what the API server's size limit on a ConfigMap means for a
dataset held in one."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_localcluster.pytest_plugin import MakePvc, PodLogs

from .ftj import FineTuneJobs
from .test_training import _wait_finished, no_trainer_left_behind  # noqa: F401 (autouse)
from .training_helpers import (
    OUTPUT_CLAIM,
    apply_s3_credentials,
    check_manifest_dir,
    generate_with_adapter,
    host_path,
    training_spec,
)

pytestmark = pytest.mark.e2e

STEPS = 4
# Row counts no other input holds: the row count the trainer logs says which file it read.
S3_ROWS = 40
CONFIGMAP_ROWS = 24
# The API server refuses a ConfigMap whose data and binaryData together exceed 1 MiB
# ("Too long: must have at most 1048576 bytes"); etcd's default request limit is 1.5 MiB.
CONFIGMAP_LIMIT = 1024 * 1024
LOADED = re.compile(r"loaded (\d+) rows from (\S+) \(split train\)")


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (the default tiny preset: the fastest to train) and two datasets
    whose row counts differ from each other and from any other test input."""
    from finetune_trainer.fixtures import write_tiny_dataset, write_tiny_model

    root = tmp_path_factory.mktemp("sources")
    write_tiny_model(root / "model")
    write_tiny_dataset(root / "s3-train.jsonl", rows=S3_ROWS, seed=1)
    write_tiny_dataset(root / "configmap-train.jsonl", rows=CONFIGMAP_ROWS, seed=2)
    return root


@pytest.fixture
def s3_bucket(s3_server: Any, ftjs: FineTuneJobs) -> str:
    """A fresh bucket, and the `s3-credentials` Secret in the test's namespace."""
    apply_s3_credentials(ftjs.kubectl, s3_server)
    return str(s3_server.create_bucket(f"src-{uuid.uuid4().hex[:12]}"))


def _s3_source(s3_server: Any, uri: str) -> dict[str, Any]:
    return {
        "uri": uri,
        "endpoint": s3_server.endpoint,
        "region": s3_server.region,
        "credentialsSecretRef": {"name": "s3-credentials"},
    }


def _spec(model: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """A short CPU run to the `outputs` PVC from the given sources, with no `inputs` PVC
    anywhere in the spec (nothing else it could read)."""
    spec = training_spec(save_steps=STEPS)
    spec["model"] = {**model, "maxSeqLength": 512}
    spec["dataset"] = dataset
    spec["training"]["maxSteps"] = STEPS
    return spec


def _trainer_log(ftjs: FineTuneJobs, name: str, pod_logs: PodLogs) -> str:
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)  # one attempt: a retry would hide what the first one read
    return pod_logs(ftjs.namespace, pod["metadata"]["name"])


def _check_adapter(
    status: dict[str, Any], spec: dict[str, Any], outputs: Path, model_dir: Path
) -> None:
    """The adapter is complete, was trained under this spec's config (the fingerprint
    covers the model and dataset sources), and loads onto the tiny model."""
    assert status["phase"] == "Succeeded", status
    adapter = host_path(status["output"]["adapterUri"], {OUTPUT_CLAIM: outputs})
    manifest = check_manifest_dir(adapter)
    assert (manifest["kind"], manifest["step"]) == ("final_model", STEPS)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {
        f["path"] for f in manifest["files"]
    }
    expected = FineTuneJobSpec.model_validate(spec).trainer_config().fingerprint()
    assert manifest["fingerprint"] == expected, "the trainer ran another config"
    assert len(generate_with_adapter(model_dir, adapter)) == 4


def test_model_and_dataset_from_s3_train_to_a_loadable_adapter(
    ftjs: FineTuneJobs,
    make_pvc: MakePvc,
    s3_server: Any,
    s3_bucket: str,
    tiny_sources: Path,
    pod_logs: PodLogs,
) -> None:
    s3 = s3_server.client()
    model_dir = tiny_sources / "model"
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        key = f"models/tiny-gpt-oss/{file.relative_to(model_dir).as_posix()}"
        s3.upload_file(str(file), s3_bucket, key)
    s3.upload_file(str(tiny_sources / "s3-train.jsonl"), s3_bucket, "data/train.jsonl")
    model_uri = f"s3://{s3_bucket}/models/tiny-gpt-oss"
    dataset_uri = f"s3://{s3_bucket}/data/train.jsonl"
    outputs = make_pvc(ftjs.namespace, OUTPUT_CLAIM)
    spec = _spec(
        {"s3": _s3_source(s3_server, model_uri)},
        {"s3": _s3_source(s3_server, dataset_uri)},
    )
    name = "s3-sources"
    ftjs.apply(name, spec)
    status = _wait_finished(ftjs, name)
    log = _trainer_log(ftjs, name, pod_logs)
    assert status["phase"] == "Succeeded", f"{status}\n{log[-4000:]}"

    # The model prefix and the dataset object were downloaded, and the rows trained on are
    # the S3 object's: its row count, read from the downloaded copy of that object.
    assert f"downloading {model_uri} into " in log, log
    assert f"downloading {dataset_uri} into " in log, log
    assert f"loading model.s3 {model_uri} with transformers" in log, log
    (loaded,) = LOADED.findall(log)
    assert int(loaded[0]) == S3_ROWS, loaded
    assert loaded[1].endswith("/train.jsonl") and "/dataset/" in loaded[1], loaded
    # The rows came from the object, not a cached or bundled copy: same bytes.
    body = s3.get_object(Bucket=s3_bucket, Key="data/train.jsonl")["Body"].read()
    assert body == (tiny_sources / "s3-train.jsonl").read_bytes()
    _check_adapter(status, spec, outputs, model_dir)


def test_dataset_from_a_configmap_trains(
    ftjs: FineTuneJobs,
    make_pvc: MakePvc,
    tiny_sources: Path,
    pod_logs: PodLogs,
) -> None:
    data = (tiny_sources / "configmap-train.jsonl").read_text(encoding="utf-8")
    assert len(data.encode()) < CONFIGMAP_LIMIT
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chats"},
        "data": {"train.jsonl": data},
    }
    ftjs.kubectl("create", "-f", "-", input=json.dumps(config_map))
    # The model from a PVC (a source the PVC tests already cover), so only the dataset's
    # source is new here.
    shutil.copytree(tiny_sources / "model", make_pvc(ftjs.namespace, "inputs") / "model")
    outputs = make_pvc(ftjs.namespace, OUTPUT_CLAIM)
    spec = _spec(
        {"pvc": {"claimName": "inputs", "path": "model"}},
        {"configMap": {"name": "chats", "key": "train.jsonl"}},
    )
    name = "configmap-dataset"
    ftjs.apply(name, spec)
    status = _wait_finished(ftjs, name)
    log = _trainer_log(ftjs, name, pod_logs)
    assert status["phase"] == "Succeeded", f"{status}\n{log[-4000:]}"

    (loaded,) = LOADED.findall(log)
    assert int(loaded[0]) == CONFIGMAP_ROWS, loaded
    # Where the operator mounts the ConfigMap (contract.CONFIGMAP_MOUNT_ROOT/<name>/<key>).
    assert loaded[1] == "/mnt/configmap/chats/train.jsonl", loaded
    assert "loading model.pvc pvc://inputs/model with transformers" in log, log
    _check_adapter(status, spec, outputs, tiny_sources / "model")


def test_a_dataset_over_a_mebibyte_cannot_be_put_in_a_configmap(
    ftjs: FineTuneJobs, tiny_sources: Path
) -> None:
    """dataset.configMap is for small datasets: the API server refuses a ConfigMap holding
    more than 1 MiB, so such a dataset never reaches a FineTuneJob this way (about 870 rows
    of the tiny dataset; the real Multilingual-Thinking is several times that)."""
    row = (tiny_sources / "configmap-train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    rows = CONFIGMAP_LIMIT // (len(row.encode()) + 1) + 1
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "too-big"},
        "data": {"train.jsonl": (row + "\n") * rows},
    }
    # create, not apply: apply would also copy the data into an annotation, refused first
    # by the 256 KiB limit on annotations.
    result = ftjs.kubectl("create", "-f", "-", input=json.dumps(config_map), check=False)
    assert result.returncode != 0
    assert "1048576" in result.stderr, result.stderr
