"""Experiment tracking on the local control plane: a FineTuneJob with ``reportTo: [mlflow,
tensorboard]`` reports to a real MLflow tracking server on loopback (the operator's policy
lists 127.0.0.1, as an administrator would list an in-cluster server), its MLflow run id
reaches ``status.tracking``, and its credentials reach the pod only by Secret reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.waiting import wait_for

from ..mlflow_server import mlflow_server
from . import test_training
from .ftj import FineTuneJobs
from .training_helpers import MAX_STEPS, host_path, training_spec

TOKEN_SECRET = "mlflow-token"

# The tiny model, the PVCs and the clean-up between tests are test_training.py's.
tiny_inputs = test_training.tiny_inputs
claims = test_training.claims
no_trainer_left_behind = test_training.no_trainer_left_behind


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def test_a_finetunejob_reports_its_mlflow_run_id_in_status(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],
    mlflow_url: str,
) -> None:
    from mlflow.tracking import MlflowClient

    ftjs.kubectl(
        "create", "secret", "generic", TOKEN_SECRET, "--from-literal=token=not-checked-here"
    )
    name = "tracked-run"
    spec = training_spec(save_steps=4)
    spec["training"]["reportTo"] = ["mlflow", "tensorboard"]
    spec["training"]["mlflow"] = {
        "trackingUri": mlflow_url,
        "credentialsSecretRef": {"name": TOKEN_SECRET, "tokenKey": "token"},
    }
    ftjs.apply(name, spec)
    # The token is referenced, never copied into the Job.
    jobs = wait_for(lambda: ftjs.jobs(name), timeout=60, interval=0.5, message="the Job")
    env = {e["name"]: e for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": TOKEN_SECRET,
        "key": "token",
    }
    status: dict[str, Any] = ftjs.wait_status(
        name,
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        timeout=test_training.RUN_TIMEOUT,
        what=f"{name} to finish training",
    )
    assert status["phase"] == "Succeeded", status
    run_id = status["tracking"]["mlflowRunId"]

    client = MlflowClient(tracking_uri=mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{ftjs.namespace}/{name}"
    uid = ftjs.get(name)["metadata"]["uid"]
    assert run.data.tags["finetune.dev/uid"] == uid
    assert client.get_experiment(run.info.experiment_id).name == ftjs.namespace
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == list(range(1, MAX_STEPS + 1))
    artifacts = {a.path for a in client.list_artifacts(run_id, "final_model")}
    assert "final_model/adapter_model.safetensors" in artifacts
    # TensorBoard's event files beside the checkpoints on the output PVC.
    output = host_path(status["output"]["adapterUri"], claims).parent
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))
