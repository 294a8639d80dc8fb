"""Evaluation on the CPU with the tiny gpt-oss model, through the real CLI: each form of
dataset.eval, the eval loss in metrics.jsonl, the metrics endpoint and the termination
message, early stopping before maxSteps, output.keep: best, and a resume that keeps the
best-so-far and the patience left."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from finetune_api.contract import ExitCode, Metric
from finetune_trainer.fixtures import write_tiny_dataset

from .cli_helpers import cli_env, json_records
from .test_train_cpu import Run, free_port, run_to_end
from .train_helpers import MetricsPoller, finish, start_cli, tiny_config, wait_for

# Rows 32-39 of the tiny dataset: none of them is among the six trained on.
EVAL_SPLIT = "train[32:40]"


def eval_config(model: Path, data: Path, out: Path, evaluation: dict[str, Any], **training: Any):
    config = tiny_config(model, data, str(out), **training)
    config["dataset"]["eval"] = evaluation
    return config


def eval_records(run: Run) -> list[dict[str, Any]]:
    return [r for r in run.records if "eval_loss" in r]


def adapter(path: Path) -> dict[str, Any]:
    return load_file(str(path / "adapter_model.safetensors"))


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.fixture(scope="module")
def split_run(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, MetricsPoller]:
    """Eight steps, evaluated on another slice of the training file every 4 (the default:
    at every checkpoint), with the metrics endpoint scraped throughout."""
    tmp = tmp_path_factory.mktemp("split")
    out = tmp / "out"
    config = eval_config(tiny_model_dir, tiny_dataset_path, out, {"split": EVAL_SPLIT}, maxSteps=8)
    port = free_port()
    env = cli_env(tmp, FTO_METRICS_PORT=str(port), FTO_METRICS_HOST="127.0.0.1")
    process = start_cli(config, tmp, env)
    with MetricsPoller(f"http://127.0.0.1:{port}/metrics") as poller:
        code, stdout, stderr = finish(process)
    return Run(code, stdout, stderr, out, tmp), poller


def test_a_split_is_evaluated_at_every_checkpoint(split_run: tuple[Run, MetricsPoller]) -> None:
    run, _ = split_run
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    evaluated = eval_records(run)
    assert [r["step"] for r in evaluated] == [4, 8]
    for record in evaluated:
        assert 0 < record["eval_loss"] < 20
        assert 0 <= record["eval_mean_token_accuracy"] <= 1
    # The training records are as before: one per step, with the training loss.
    assert [r["step"] for r in run.records if "loss" in r] == list(range(1, 9))
    # The eval rows are prepared as the training rows are (overlong ones skipped).
    assert "eval data: {'rows_in': 8" in run.stderr


def test_eval_loss_reaches_the_message_metrics_jsonl_and_the_plot(
    split_run: tuple[Run, MetricsPoller],
) -> None:
    run, _ = split_run
    last = eval_records(run)[-1]
    message = run.message
    assert message.eval_loss == last["eval_loss"]
    assert message.eval_mean_token_accuracy == last["eval_mean_token_accuracy"]
    assert message.final_model is not None
    assert (message.final_model.step, message.final_model.selection) == (8, "last step")
    assert message.message.endswith("; final_model: last step")
    assert message.early_stop is None
    assert message.progress.eval_loss == last["eval_loss"]  # what status.progress copies
    history = [json.loads(line) for line in (run.out / "final_model" / "metrics.jsonl").open()]
    assert [r["step"] for r in history if "eval_loss" in r] == [4, 8]
    assert (run.out / "final_model" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_the_metrics_endpoint_serves_the_eval_loss(split_run: tuple[Run, MetricsPoller]) -> None:
    run, poller = split_run
    losses = {s.eval_loss for s in poller.samples if s.eval_loss is not None}
    assert losses and losses <= {r["eval_loss"] for r in eval_records(run)}
    served = "\n".join(poller.raw)
    assert Metric.EVAL_MEAN_TOKEN_ACCURACY in served and Metric.BEST_EVAL_LOSS in served


def test_a_held_out_fraction_is_drawn_with_its_seed(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = eval_config(
        tiny_model_dir,
        tiny_dataset_path,
        out,
        {"fraction": 0.5, "seed": 1},
        maxSteps=2,
        saveSteps=2,
    )
    run = run_to_end(config, tmp_path, out)
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    assert "held out 3 of 6 rows for evaluation (seed 1); training on 3" in run.stderr
    assert [r["step"] for r in eval_records(run)] == [2]
    assert run.message.eval_loss == eval_records(run)[0]["eval_loss"]


def test_a_separate_source_is_evaluated(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    other = write_tiny_dataset(tmp_path / "eval" / "rows.jsonl", rows=6, seed=5)
    out = tmp_path / "out"
    config = eval_config(
        tiny_model_dir, tiny_dataset_path, out, {"path": str(other)}, maxSteps=2, saveSteps=2
    )
    run = run_to_end(config, tmp_path, out)
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    assert f"loaded 6 rows from {other} (split train)" in run.stderr
    assert [r["step"] for r in eval_records(run)] == [2]


def run_with_eval_on_s3(
    model: Path, data: Path, tmp_path: Path, s3_server: Any, bucket: str, secret_key: str
) -> Run:
    """Two steps with the eval set at s3://<bucket>/held, read with FTO_S3_EVAL_* only (the
    variables the operator fills from dataset.eval.s3.credentialsSecretRef)."""
    out = tmp_path / "out"
    source = {"uri": f"s3://{bucket}/held", "endpoint": s3_server.endpoint}
    source["region"] = s3_server.region
    config = eval_config(model, data, out, {"s3": source}, maxSteps=2, saveSteps=2)
    return run_to_end(
        config,
        tmp_path,
        out,
        FTO_S3_EVAL_ACCESS_KEY_ID=s3_server.access_key,
        FTO_S3_EVAL_SECRET_ACCESS_KEY=secret_key,
    )


def test_an_eval_set_on_s3_is_read_with_its_own_credentials(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path, s3_server: Any
) -> None:
    """dataset.eval.s3 is downloaded with FTO_S3_EVAL_*, the variables the operator fills
    from dataset.eval.s3.credentialsSecretRef: no other S3 credentials are in the env."""
    bucket = s3_server.create_bucket(f"eval-{uuid.uuid4().hex[:10]}")
    rows = write_tiny_dataset(tmp_path / "rows.jsonl", rows=5, seed=7)
    s3_server.client().put_object(Bucket=bucket, Key="held/rows.jsonl", Body=rows.read_bytes())
    run = run_with_eval_on_s3(
        tiny_model_dir, tiny_dataset_path, tmp_path, s3_server, bucket, s3_server.secret_key
    )
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    assert "loaded 5 rows from" in run.stderr and "(split train)" in run.stderr
    assert [r["step"] for r in eval_records(run)] == [2]


def test_an_eval_set_on_s3_without_access_exits_naming_dataset_eval_s3(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path, s3_server: Any
) -> None:
    bucket = s3_server.create_bucket(f"eval-{uuid.uuid4().hex[:10]}")
    run = run_with_eval_on_s3(
        tiny_model_dir, tiny_dataset_path, tmp_path, s3_server, bucket, "wrong-key"
    )
    assert run.code != ExitCode.SUCCEEDED
    assert run.message.message.startswith("dataset.eval.s3: "), run.message.message


def test_an_eval_set_in_a_mounted_config_map_is_evaluated(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    """dataset.eval.configMap is read where the operator mounts it: <root>/<name>/<key>."""
    root = tmp_path / "configmaps"
    write_tiny_dataset(root / "held-out" / "eval.jsonl", rows=4, seed=9)
    out = tmp_path / "out"
    evaluation = {"configMap": {"name": "held-out", "key": "eval.jsonl"}}
    config = eval_config(
        tiny_model_dir, tiny_dataset_path, out, evaluation, maxSteps=2, saveSteps=2
    )
    run = run_to_end(config, tmp_path, out, FTO_CONFIGMAP_ROOT=str(root))
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    assert f"loaded 4 rows from {root / 'held-out' / 'eval.jsonl'}" in run.stderr
    assert [r["step"] for r in eval_records(run)] == [2]


def test_a_missing_eval_config_map_key_exits_78_naming_it(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    evaluation = {"configMap": {"name": "held-out", "key": "eval.jsonl"}}
    config = eval_config(
        tiny_model_dir, tiny_dataset_path, out, evaluation, maxSteps=2, saveSteps=2
    )
    run = run_to_end(config, tmp_path, out, FTO_CONFIGMAP_ROOT=str(tmp_path / "none"))
    assert run.code == ExitCode.INVALID_INPUT
    assert run.message.reason == "InvalidDataset"
    assert run.message.message.startswith("dataset.eval.configMap held-out/eval.jsonl: ")


def test_a_missing_eval_split_exits_78_naming_dataset_eval(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = eval_config(
        tiny_model_dir, tiny_dataset_path, out, {"split": "test"}, maxSteps=2, saveSteps=2
    )
    run = run_to_end(config, tmp_path, out)
    assert run.code == ExitCode.INVALID_INPUT
    message = run.message
    assert message.reason == "InvalidDataset"
    assert message.message.startswith("dataset.eval: dataset split 'test' is not in")


# Eval loss on EVAL_SPLIT, every 2 steps: 8.728 (2), 8.684 (4), 8.688 (6), 8.689 (8), ...
# With patience 2 and minDelta 0.003, training stops at step 8; the best is step 4.
EARLY = {"saveSteps": 2, "earlyStopping": {"patience": 2, "minDelta": 0.003}}


def early_config(model: Path, data: Path, out: Path) -> dict[str, Any]:
    config = eval_config(model, data, out, {"split": EVAL_SPLIT}, **EARLY)
    config["output"]["keep"] = "best"
    return config


@pytest.fixture(scope="module")
def early_run(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    tmp = tmp_path_factory.mktemp("early")
    out = tmp / "out"
    return run_to_end(early_config(tiny_model_dir, tiny_dataset_path, out), tmp, out)


def test_early_stopping_stops_before_max_steps(early_run: Run) -> None:
    run = early_run
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    losses = [r["eval_loss"] for r in eval_records(run)]
    assert [r["step"] for r in eval_records(run)] == [2, 4, 6, 8]
    best = min(losses)
    assert losses.index(best) == 1  # step 4; the two after it improve on it by < minDelta
    assert all(loss > best - 0.003 for loss in losses[2:])
    message = run.message
    assert message.reason == "Completed"
    assert (message.step, message.total_steps) == (8, 12)
    stopped = (
        "stopped early at step 8: the eval loss did not improve by more than 0.003 for 2 "
        "evaluations"
    )
    assert message.early_stop == stopped and stopped in message.message
    assert sorted(p.name for p in run.out.glob("checkpoint-*")) == [
        f"checkpoint-{s}" for s in (2, 4, 6, 8)
    ]


def test_keep_best_makes_the_best_checkpoint_final_model(early_run: Run) -> None:
    run = early_run
    message = run.message
    best = min(r["eval_loss"] for r in eval_records(run))
    assert message.final_model is not None
    assert message.final_model.step == 4
    assert message.final_model.selection == f"best eval loss {best:.4g} at step 4"
    assert message.message.endswith(f"final_model: best eval loss {best:.4g} at step 4")
    final = adapter(run.out / "final_model")
    assert same_weights(final, adapter(run.out / "checkpoint-4"))
    assert not same_weights(final, adapter(run.out / "checkpoint-8"))


def test_a_resumed_run_keeps_the_best_and_the_patience(
    early_run: Run, tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    """Killed after checkpoint-6 (one evaluation without improvement so far), the run
    resumes with the best at step 4 and one evaluation of patience left: it stops at step 8
    with checkpoint-4's adapter, as the uninterrupted run did."""
    out = tmp_path / "out"
    config = early_config(tiny_model_dir, tiny_dataset_path, out)
    process = start_cli(config, tmp_path, cli_env(tmp_path))
    wait_for(lambda: (out / "checkpoint-6" / "manifest.json").exists(), process)
    process.send_signal(signal.SIGKILL)
    _, killed_stdout, _ = finish(process)
    assert max(r["step"] for r in json_records(killed_stdout)) < 8

    resumed = run_to_end(config, tmp_path, out)

    assert resumed.code == ExitCode.SUCCEEDED, resumed.stderr[-4000:]
    message = resumed.message
    assert message.resumed_from_step == 6
    assert message.step == 8  # not 10: the counter came back from checkpoint-6
    assert message.final_model == early_run.message.final_model
    assert same_weights(adapter(out / "final_model"), adapter(out / "checkpoint-4"))
    assert same_weights(adapter(out / "final_model"), adapter(early_run.out / "final_model"))
    history = [json.loads(line) for line in (out / "final_model" / "metrics.jsonl").open()]
    assert [r["step"] for r in history if "eval_loss" in r] == [2, 4, 6, 8]


def test_keep_best_on_s3_takes_the_best_checkpoint_as_uploaded(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path, s3_server: Any
) -> None:
    """On S3 checkpoints are uploaded in the background: final_model waits for them, then
    takes the best one's adapter from the bucket (the same run as early_run's, on S3)."""
    bucket = s3_server.create_bucket(f"best-{uuid.uuid4().hex[:10]}")
    config = early_config(tiny_model_dir, tiny_dataset_path, tmp_path / "unused")
    config["output"] = {
        "s3": {"uri": f"s3://{bucket}/run", "endpoint": s3_server.endpoint},
        "keep": "best",
    }
    run = run_to_end(
        config,
        tmp_path,
        tmp_path / "unused",
        FTO_S3_OUTPUT_ACCESS_KEY_ID=s3_server.access_key,
        FTO_S3_OUTPUT_SECRET_ACCESS_KEY=s3_server.secret_key,
    )
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    assert run.message.final_model is not None and run.message.final_model.step == 4

    def downloaded(prefix: str) -> dict[str, Any]:
        local = tmp_path / prefix / "adapter_model.safetensors"
        local.parent.mkdir(parents=True)
        s3_server.client().download_file(
            bucket, f"run/{prefix}/adapter_model.safetensors", str(local)
        )
        return load_file(str(local))

    final = downloaded("final_model")
    assert same_weights(final, downloaded("checkpoint-4"))
    assert not same_weights(final, downloaded("checkpoint-8"))
