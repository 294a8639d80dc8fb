"""Experiment tracking end to end on the CPU: the tiny model trained through the real CLI
with ``reportTo: [mlflow, tensorboard, wandb]`` against a real MLflow tracking server on
loopback; the event files read back with TensorBoard's own reader, and W&B's offline run
files with W&B's own record reader."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_api.contract import ExitCode
from finetune_trainer.storage.manifest import verify_dir

from ...mlflow_server import mlflow_server
from .cli_helpers import cli_env, termination
from .train_helpers import finish, start_cli, tiny_config
from .wandb_records import history_rows

STEPS = 12
JOB = {"FTO_JOB_NAMESPACE": "team-a", "FTO_JOB_NAME": "tiny-run", "FTO_RUN_ID": "uid-1234"}


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def _tracked_config(model: Path, data: Path, out: Path, uri: str) -> dict[str, Any]:
    return tiny_config(
        model,
        data,
        str(out),
        reportTo=["mlflow", "tensorboard", "wandb"],
        mlflow={"trackingUri": uri, "experiment": "tracking-test"},
        wandb={"project": "tiny"},
    )


@pytest.fixture(scope="module")
def tracked_run(
    tiny_model_dir: Path, tiny_dataset_path: Path, mlflow_url: str, tmp_path_factory: Any
) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("tracked")
    out = tmp / "out"
    config = _tracked_config(tiny_model_dir, tiny_dataset_path, out, mlflow_url)
    env = cli_env(tmp, **JOB)
    env.pop("WANDB_API_KEY", None)
    code, _, stderr = finish(start_cli(config, tmp, env), timeout=420)
    assert code == ExitCode.SUCCEEDED, stderr[-4000:]
    return {"out": out, "message": termination(tmp), "stderr": stderr, "tmp": tmp}


def test_mlflow_has_params_metrics_per_step_and_the_adapter(
    tracked_run: dict[str, Any], mlflow_url: str
) -> None:
    from mlflow.tracking import MlflowClient

    run_id = tracked_run["message"].mlflow_run_id
    assert run_id, tracked_run["message"]
    client = MlflowClient(tracking_uri=mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "team-a/tiny-run"
    assert run.data.tags["finetune.dev/uid"] == "uid-1234"
    assert run.data.tags["finetune.dev/namespace"] == "team-a"
    assert client.get_experiment(run.info.experiment_id).name == "tracking-test"
    assert run.data.params["training.learningRate"] == "0.01"
    assert run.data.params["lora.rank"] == "8"
    losses = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, STEPS + 1))
    artifacts = {a.path for a in client.list_artifacts(run_id, "final_model")}
    assert "final_model/adapter_model.safetensors" in artifacts, artifacts
    assert "final_model/adapter_config.json" in artifacts


def test_tensorboard_event_files_read_back(tracked_run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Path = tracked_run["out"]
    for directory in (out / "tensorboard", out / "final_model" / "tensorboard"):
        events = EventAccumulator(str(directory))
        events.Reload()
        steps = [event.step for event in events.Scalars("train/loss")]
        assert steps == list(range(1, STEPS + 1)), directory
    # Each checkpoint carries the events up to its step, inside its manifest.
    checkpoint = out / "checkpoint-8"
    events = EventAccumulator(str(checkpoint / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    verify_dir(checkpoint)
    verify_dir(out / "final_model")


def test_wandb_offline_run_holds_the_history(tracked_run: dict[str, Any]) -> None:
    runs = list((tracked_run["out"] / "wandb").glob("offline-run-*/run-uid-1234.wandb"))
    assert len(runs) == 1, runs
    steps = [int(row["train/global_step"]) for row in history_rows(runs[0]) if "train/loss" in row]
    assert steps == list(range(1, STEPS + 1))


def test_a_dead_tracking_server_does_not_fail_the_run(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    out = tmp_path / "out"
    config = tiny_config(
        tiny_model_dir,
        tiny_dataset_path,
        str(out),
        maxSteps=2,
        saveSteps=2,
        reportTo=["mlflow"],
        mlflow={"trackingUri": dead},
    )
    env = cli_env(tmp_path, **JOB, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    code, _, stderr = finish(start_cli(config, tmp_path, env), timeout=300)
    assert code == ExitCode.SUCCEEDED, stderr[-4000:]
    assert "mlflow: starting the run failed, so the run goes on without it" in stderr
    assert termination(tmp_path).mlflow_run_id is None
    assert (out / "final_model" / "adapter_model.safetensors").is_file()


def test_a_retried_pod_continues_its_finetunejobs_run(mlflow_url: str) -> None:
    from finetune_api.config import MlflowSpec, TrainerConfig
    from finetune_trainer.tracking.identity import TAG_UID, RunIdentity
    from finetune_trainer.tracking.mlflow_run import MlflowRun

    spec = MlflowSpec.model_validate({"trackingUri": mlflow_url, "experiment": "retries"})
    config = TrainerConfig()
    first = MlflowRun(spec, RunIdentity("team-b", "job", "uid-retry"))
    run_id = first.start(config, "fp")
    first.log_step(1, {"loss": 2.0})
    first.end("FAILED")
    again = MlflowRun(spec, RunIdentity("team-b", "job", "uid-retry"))
    assert again.start(config, "fp") == run_id
    again.log_step(2, {"loss": 1.0})
    other = MlflowRun(spec, RunIdentity("team-b", "job", "uid-other"))
    assert other.start(config, "fp") != run_id
    history = again.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert again.client.get_run(run_id).info.status == "RUNNING"
    # A run planted later with the same uid tag (by anyone who may write to the
    # experiment) is not taken for the FineTuneJob's own.
    planted = again.client.create_run(
        again.client.get_run(run_id).info.experiment_id, tags={TAG_UID: "uid-retry"}
    )
    third = MlflowRun(spec, RunIdentity("team-b", "job", "uid-retry"))
    assert third.start(config, "fp") == run_id != planted.info.run_id
