"""The pure parts of the trainer's tracking: the run's identity, the parameters and metrics
sent to MLflow, the guard that turns a failing tracker off, and the SFTConfig run name."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.tracking.background import BackgroundSender, call_within
from finetune_trainer.tracking.guard import ERROR_LIMIT, TrackerGuard
from finetune_trainer.tracking.identity import RunIdentity
from finetune_trainer.tracking.mlflow_run import (
    artifact_store_problem,
    config_params,
    step_metrics,
)
from finetune_trainer.trl_args import sft_config_kwargs


def test_identity_from_the_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTO_JOB_NAMESPACE", "ml")
    monkeypatch.setenv("FTO_JOB_NAME", "run-a")
    monkeypatch.setenv("FTO_RUN_ID", "uid-1")
    identity = RunIdentity.from_env("outputs")
    assert identity.run_name == "ml/run-a"
    assert identity.tags("fp")["finetune.dev/uid"] == "uid-1"


def test_identity_outside_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FTO_JOB_NAMESPACE", "FTO_JOB_NAME", "FTO_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    identity = RunIdentity.from_env("outputs")
    assert identity.run_name == "finetune/outputs" and identity.uid is None
    assert "finetune.dev/uid" not in identity.tags("fp")


def test_params_are_the_config_without_secrets_or_trackers() -> None:
    config = TrainerConfig.model_validate(
        {
            "model": {"tokenSecretRef": {"name": "hf", "key": "token"}},
            "training": {
                "reportTo": ["mlflow"],
                "mlflow": {"trackingUri": "https://m.example.com"},
            },
        }
    )
    params = config_params(config, limit=20)
    assert params["training.learningRate"] == "0.0002"
    assert params["lora.rank"] == "8"
    assert not any("SecretRef" in key or "mlflow" in key for key in params)
    assert all(len(value) <= 20 for value in params.values())


def test_step_metrics_keep_finite_numbers_under_valid_names() -> None:
    logs = {"loss": 1.5, "grad_norm": float("nan"), "epoch": 1, "note": "x", "a(b)": 2.0}
    assert step_metrics(logs) == {"loss": 1.5, "epoch": 1.0, "a_b_": 2.0}


def test_the_guard_logs_once_bounded_and_turns_the_tracker_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = TrackerGuard("mlflow")
    calls = []

    def fail() -> None:
        calls.append(1)
        raise ConnectionError("x" * 5000)

    with caplog.at_level(logging.WARNING):
        assert guard.call("logging metrics", fail) is None
        assert guard.call("logging metrics", fail) is None
    assert calls == [1] and guard.failed
    (record,) = caplog.records
    assert "mlflow: logging metrics failed, so the run goes on without it" in record.message
    assert len(record.message) < ERROR_LIMIT + 200


def test_run_name_reaches_the_sft_config(tmp_path: Path) -> None:
    kwargs = sft_config_kwargs(
        TrainerConfig().training,
        output_dir=tmp_path,
        max_length=256,
        optimizer="adamw_torch",
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        run_name="ml/run-a",
    )
    assert kwargs["run_name"] == "ml/run-a" and kwargs["report_to"] == "none"


def test_a_slow_tracking_server_never_slows_the_step(caplog: pytest.LogCaptureFixture) -> None:
    release, busy = threading.Event(), threading.Event()
    sent: list[int] = []

    def slow(value: int) -> None:
        busy.set()
        release.wait(10)
        sent.append(value)

    sender = BackgroundSender(TrackerGuard("mlflow"), limit=2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        sender.submit("logging metrics", slow, 0)
        assert busy.wait(5)
        for value in range(1, 5):
            sender.submit("logging metrics", slow, value)
        assert time.monotonic() - started < 1.0
        release.set()
        sender.drain(timeout=10)
    # One in flight, two waiting; the rest dropped and said so.
    assert sent == [0, 1, 2]
    assert any("dropping what it cannot take" in r.message for r in caplog.records)


def test_the_end_of_the_run_waits_for_a_stuck_server_a_bounded_time() -> None:
    stuck = threading.Event()
    sender = BackgroundSender(TrackerGuard("mlflow"))
    sender.submit("logging metrics", stuck.wait, 30)
    started = time.monotonic()
    sender.drain(timeout=0.5)
    assert time.monotonic() - started < 2.0
    stuck.set()


def test_a_final_call_that_never_answers_is_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The adapter's upload to a server that trickles (or an artifact store without a
    timeout) cannot hold the run's exit: it is waited for a bounded time, then dropped."""
    stuck = threading.Event()
    guard = TrackerGuard("mlflow")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        call_within(guard, 0.5, "logging the adapter", stuck.wait, 30)
    assert time.monotonic() - started < 2.0
    assert guard.failed
    assert "mlflow: logging the adapter took over" in caplog.text
    called = []
    guard.call("ending the run", called.append, "FINISHED")
    assert called == []  # the tracker is off for the rest of the run
    stuck.set()


@pytest.mark.parametrize(
    ("artifact_uri", "allowed"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", True),
        ("mlflow-artifacts://mlflow.example.com:5000/1/abc/artifacts", True),
        ("mlflow-artifacts://10.0.0.5:9000/1/abc/artifacts", False),
        ("http://169.254.169.254/latest", False),
        ("ftp://files.example.com/artifacts", False),
        ("s3://bucket/mlflow/1/abc", False),
        ("/var/lib/mlflow/artifacts", False),
    ],
)
def test_the_adapter_goes_only_through_the_tracking_server(
    artifact_uri: str, allowed: bool
) -> None:
    problem = artifact_store_problem(artifact_uri, "https://mlflow.example.com:5000")
    assert (problem is None) == allowed
    if problem:
        assert "--serve-artifacts" in problem
