"""The command line: config loading and errors, overrides, exit codes, and that --help and
config validation never import torch."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import finetune_trainer
from finetune_api.config import TrainerConfig
from finetune_api.contract import ExitCode
from finetune_trainer import cli
from finetune_trainer.cli import apply_overrides, load_config
from finetune_trainer.errors import InvalidConfig
from finetune_trainer.signals import Interrupted
from finetune_trainer.storage.s3 import S3Store

from .cli_helpers import cli_env, run_cli, termination, write_config

# The original single-machine example's config.yaml, in its own snake_case spelling.
ORIGINAL_EXAMPLE = """\
model:
  model_name: unsloth/gpt-oss-20b
  max_seq_length: 1024
  load_in_4bit: true
dataset:
  path: HuggingFaceH4/Multilingual-Thinking
  format: sharegpt
  split: train
  max_samples: 1000
lora:
  r: 8
  lora_alpha: 16
  lora_dropout: 0
training:
  max_steps: 20
  per_device_train_batch_size: 1
  gradient_accumulation_steps: 4
  learning_rate: 2.0e-4
  optim: adamw_8bit
  save_steps: 10
  seed: 3407
output:
  dir: outputs
"""


def heavy_modules(stderr: str) -> set[str]:
    """Top-level packages of heavy libraries in a ``python -X importtime`` report."""
    heavy = {"torch", "transformers", "peft", "trl", "datasets", "unsloth", "boto3"}
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name.split(".")[0] in heavy:
                found.add(name.split(".")[0])
    return found


def test_help_is_fast_and_imports_no_heavy_library(tmp_path: Path) -> None:
    result = run_cli(["--help"], cli_env(tmp_path), python_flags=("-X", "importtime"))
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "--output-dir" in result.stdout
    assert "78" in result.stdout  # the exit codes are documented
    assert heavy_modules(result.stderr) == set()


def test_bad_config_exits_78_naming_every_field(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model": {"maxSeqLength": 8},
            "lora": {"rank": 0},
            "training": {"maxSteps": 10, "optimizer": "adam9000", "lerning_rate": 1e-4},
        },
    )
    result = run_cli(
        ["--config", str(config)], cli_env(tmp_path), python_flags=("-X", "importtime")
    )

    assert result.returncode == int(ExitCode.INVALID_INPUT) == 78
    # An unknown key is named as written (a known one in the schema's camelCase).
    for field in ("model.maxSeqLength", "lora.rank", "training.optimizer", "training.lerning_rate"):
        assert field in result.stderr, field
    assert "unknown field" in result.stderr
    assert "fix:" in result.stderr
    message = termination(tmp_path)
    assert message.status == "invalid_input"
    assert message.reason == "InvalidConfig"
    assert "lora.rank" in message.message
    assert heavy_modules(result.stderr) == set()


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing-file", "ConfigNotFound"),
        ("no-config", "ConfigNotFound"),
        ("bad-yaml", "InvalidConfig"),
        ("bad-port", "InvalidConfig"),
    ],
)
def test_config_problems_exit_78(tmp_path: Path, setup: str, reason: str) -> None:
    env = cli_env(tmp_path)
    args: list[str] = []
    if setup == "missing-file":
        args = ["--config", str(tmp_path / "nope.yaml")]
    elif setup == "bad-yaml":
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: [unclosed\n")
        args = ["--config", str(bad)]
    elif setup == "bad-port":
        env["FTO_METRICS_PORT"] = "ninety"
        args = ["--config", str(write_config(tmp_path / "c.yaml", {}))]
    result = run_cli(args, env)
    assert result.returncode == 78, result.stderr
    assert termination(tmp_path).reason == reason


def test_config_comes_from_fto_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"training": {"maxSteps": 0}})
    result = run_cli([], cli_env(tmp_path, FTO_CONFIG=str(config)))
    assert result.returncode == 78
    assert "training.maxSteps" in result.stderr


def test_original_example_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL_EXAMPLE)
    config = load_config(path)
    assert config.model.name == "unsloth/gpt-oss-20b"
    assert config.model.max_seq_length == 1024
    assert config.dataset.name == "HuggingFaceH4/Multilingual-Thinking"
    assert config.dataset.max_samples == 1000
    assert (config.lora.rank, config.lora.alpha, config.lora.dropout) == (8, 16, 0.0)
    assert config.training.optimizer == "adamw_8bit"
    assert config.training.max_steps == 20 and config.training.save_steps == 10
    assert config.output.path == "outputs"


def test_output_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainerConfig.from_mapping(
        {"output": {"s3": {"uri": "s3://bucket/runs/a"}, "mergedExport": "merged_16bit"}}
    )
    monkeypatch.delenv("FTO_OUTPUT_DIR", raising=False)
    assert apply_overrides(config, None) is config

    flagged = apply_overrides(config, tmp_path / "flag")
    assert flagged.output.path == str(tmp_path / "flag") and flagged.output.s3 is None
    assert flagged.output.merged_export == "merged_16bit"
    assert flagged.fingerprint() == config.fingerprint()  # where outputs go is not training

    monkeypatch.setenv("FTO_OUTPUT_DIR", str(tmp_path / "env"))
    assert apply_overrides(config, None).output.path == str(tmp_path / "env")
    assert apply_overrides(config, tmp_path / "flag").output.path == str(tmp_path / "flag")


def test_load_config_raises_invalid_config_for_validation_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.yaml", {"training": {"numEpochs": 1, "maxSteps": 5}})
    with pytest.raises(InvalidConfig, match="set only one of"):
        load_config(path)
    assert "invalid config" in capsys.readouterr().err


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cli.main run in this process, with the environment cli_env gives a subprocess."""
    for name in list(os.environ):
        if name.startswith("FTO_"):
            monkeypatch.delenv(name)
    for name, value in cli_env(tmp_path).items():
        if name.startswith("FTO_"):
            monkeypatch.setenv(name, value)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--metrics-port", "ninety"], "argument --metrics-port: invalid int value: 'ninety'"),
        (["--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_exit_78_with_a_message(
    in_process: Path, argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == ExitCode.INVALID_INPUT
    message = termination(in_process)
    assert message.status == "invalid_input" and message.reason == "InvalidConfig"
    assert problem in message.message and "finetune-train --help" in message.message
    assert "usage: finetune-train" in capsys.readouterr().err


def test_help_still_exits_0(in_process: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    assert "--dry-run" in capsys.readouterr().out
    assert not (in_process / "termination-log").exists()


def test_a_dry_run_that_fails_unexpectedly_still_writes_its_message(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetune_trainer import dry_run

    def broken(*_: object) -> None:
        raise RuntimeError("the plan broke")

    monkeypatch.setattr(dry_run, "dry_run", broken)
    config = write_config(in_process / "c.yaml", {"model": {"path": str(in_process)}})
    assert cli.main(["--config", str(config), "--dry-run"]) == ExitCode.FAILED
    message = termination(in_process)
    assert message.status == "failed" and message.reason == "DryRunFailed"
    assert message.message == "RuntimeError: the plan broke"


def test_a_stop_signal_outside_the_run_s_handlers_still_writes_its_message(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def preempted(*_: object) -> None:
        raise Interrupted("received SIGTERM before a checkpoint could be written")

    monkeypatch.setattr(cli, "run", preempted)
    assert cli.main([]) == ExitCode.INTERRUPTED
    message = termination(in_process)
    assert message.status == "interrupted" and message.reason == "Interrupted"
    assert "SIGTERM" in message.message


# --- invalid input found only once the run reaches it --------------------------------------
def test_the_unsloth_backend_without_a_gpu_exits_78(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = write_config(in_process / "c.yaml", {"output": {"path": str(in_process / "out")}})
    assert cli.main(["--config", str(config), "--backend", "unsloth"]) == ExitCode.INVALID_INPUT
    message = termination(in_process)
    assert message.status == "invalid_input" and message.reason == "InvalidConfig"
    assert message.message.startswith("--backend unsloth needs a CUDA GPU and none is visible")
    assert "--backend auto" in message.message


def test_a_bad_gpu_memory_fraction_exits_78_before_anything_loads(
    in_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTO_GPU_MEMORY_FRACTION", "lots")
    config = write_config(
        in_process / "c.yaml",
        {"model": {"path": str(in_process / "no-model")}, "output": {"path": str(in_process)}},
    )
    assert cli.main(["--config", str(config)]) == ExitCode.INVALID_INPUT
    message = termination(in_process)
    assert message.status == "invalid_input" and message.reason == "InvalidConfig"
    assert message.message.startswith(
        "FTO_GPU_MEMORY_FRACTION must be a number between 0.1 and 1.0, not 'lots'"
    )


@pytest.mark.parametrize(
    ("role", "reason"), [("model", "InvalidModel"), ("dataset", "InvalidDataset")]
)
def test_an_s3_source_with_a_key_outside_its_prefix_exits_78(
    in_process: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_server: Any,
    tiny_model_dir: Path,
    role: str,
    reason: str,
) -> None:
    bucket = s3_server.create_bucket(f"src-{uuid.uuid4().hex[:10]}")
    s3_server.client().put_object(Bucket=bucket, Key="src/config.json", Body=b"{}")
    real_list = S3Store.list_keys

    def list_keys(self: S3Store, prefix: str) -> Iterator[str]:
        yield from real_list(self, prefix)
        yield f"{prefix}../../outside"  # what a hostile or broken writer could leave there

    monkeypatch.setattr(S3Store, "list_keys", list_keys)
    for part in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        value = s3_server.access_key if part == "ACCESS_KEY_ID" else s3_server.secret_key
        monkeypatch.setenv(f"FTO_S3_{role.upper()}_{part}", value)
    source = {"uri": f"s3://{bucket}/src", "endpoint": s3_server.endpoint}
    spec = {
        "model": {"path": str(tiny_model_dir)},
        "output": {"path": str(in_process / "out")},
        role: {"s3": source},
    }
    config = write_config(in_process / "c.yaml", spec)
    assert cli.main(["--config", str(config)]) == ExitCode.INVALID_INPUT
    message = termination(in_process)
    assert message.status == "invalid_input" and message.reason == reason
    assert message.message.startswith(
        f"{role}.s3: refusing S3 key outside the download directory: src/../../outside; "
        "rename or remove that object"
    )
    assert not (in_process / "outside").exists()


def test_set_changes_fields_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL_EXAMPLE)
    config = load_config(
        path,
        [
            "training.max_steps=5",  # spelled as the file spells it
            "training.save_steps=5",
            "lora.r=16",
            "training.learning_rate=1e-5",
            "lora.target_modules=[q_proj, v_proj]",
            "dataset.max_samples=",  # empty: null, every row
        ],
    )
    assert config.training.max_steps == 5
    assert config.lora.rank == 16
    assert config.training.learning_rate == 1e-5
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.dataset.max_samples is None
    assert config.model.max_seq_length == 1024  # the rest is the file's
    assert path.read_text() == ORIGINAL_EXAMPLE
    # The schema's spelling finds the file's own key, so --help's example works on it too.
    assert (
        load_config(path, ["training.maxSteps=7", "training.saveSteps=7"]).training.max_steps == 7
    )


@pytest.mark.parametrize(
    ("assignment", "problem"),
    [
        ("training.maxSteps", "write it as section.field=value"),
        ("training..maxSteps=5", "write it as section.field=value"),
        ("training.maxSteps=[5", "the value is not valid YAML"),
        ("model.maxSeqLength.bits=4", "model.maxSeqLength is a value, not a section"),
    ],
)
def test_a_malformed_set_says_how_to_write_it(
    tmp_path: Path, assignment: str, problem: str
) -> None:
    path = write_config(tmp_path / "c.yaml", {"model": {"maxSeqLength": 512}})
    with pytest.raises(InvalidConfig, match=re.escape(problem)):
        load_config(path, [assignment])


def test_set_on_the_command_line_is_validated_like_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {})
    result = run_cli(["--config", str(config), "--set", "training.maxSteps=0"], cli_env(tmp_path))
    assert result.returncode == 78, result.stderr
    assert "training.maxSteps" in termination(tmp_path).message


def test_version(in_process: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"finetune-train {finetune_trainer.__version__}"


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune_trainer import progress_bars
    from finetune_trainer.trl_args import sft_config_kwargs

    def kwargs() -> dict[str, Any]:
        return sft_config_kwargs(
            TrainerConfig.from_mapping({}).training,
            output_dir=Path("out"),
            max_length=256,
            optimizer="adamw_torch",
            gradient_checkpointing=False,
            bf16=False,
            fp16=False,
        )

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(progress_bars.sys.stderr, "isatty", lambda: False)
    progress_bars.silence_progress_bars_off_a_terminal()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    assert kwargs()["disable_tqdm"] is True

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr(progress_bars.sys.stderr, "isatty", lambda: True)
    progress_bars.silence_progress_bars_off_a_terminal()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert kwargs()["disable_tqdm"] is False


def test_json_logs_on_request(tmp_path: Path) -> None:
    """FTO_LOG_FORMAT=json: every line on stderr is one JSON object, for log pipelines."""
    config = write_config(tmp_path / "c.yaml", {"training": {"maxSteps": 0}})
    result = run_cli(["--config", str(config)], cli_env(tmp_path, FTO_LOG_FORMAT="json"))
    assert result.returncode == 78
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records, result.stderr
    assert {"time", "level", "logger", "message"} <= records[-1].keys()
    assert any("training.maxSteps" in r["message"] for r in records)
