"""End-to-end training on the CPU with the tiny gpt-oss model, through the real CLI in a
subprocess, as the container runs it: learning, outputs and manifests, metrics, rotation,
kill-and-resume with the same data order, SIGTERM, corrupt and incompatible checkpoints."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetune_api.contract import ExitCode, Metric, TerminationMessage
from finetune_trainer.storage.manifest import verify_dir

from .cli_helpers import cli_env, json_records, run_cli, termination, write_config
from .train_helpers import MetricsPoller, finish, start_cli, tiny_config, wait_for


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    out: Path
    tmp: Path

    @property
    def records(self) -> list[dict[str, Any]]:
        return json_records(self.stdout)

    @property
    def message(self) -> TerminationMessage:
        return termination(self.tmp)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_to_end(config: dict[str, Any], tmp: Path, out: Path, **env: str) -> Run:
    code, stdout, stderr = finish(start_cli(config, tmp, cli_env(tmp, **env)))
    return Run(code, stdout, stderr, out, tmp)


def reference_config(model: Path, dataset: Path, out: Path, **training: Any) -> dict[str, Any]:
    """The reference run's config (checkpoints every 4 steps, keep 2, merged export)."""
    config = tiny_config(model, dataset, str(out), saveTotalLimit=2, **training)
    config["output"]["mergedExport"] = "merged_16bit"
    return config


@pytest.fixture(scope="module")
def reference(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, MetricsPoller]:
    """One uninterrupted 12-step run (checkpoints every 4 steps, keep 2, merged export),
    with the metrics endpoint scraped throughout."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    config = reference_config(tiny_model_dir, tiny_dataset_path, out)
    port = free_port()
    env = cli_env(tmp, FTO_METRICS_PORT=str(port), FTO_METRICS_HOST="127.0.0.1")
    process = start_cli(config, tmp, env)
    with MetricsPoller(f"http://127.0.0.1:{port}/metrics") as poller:
        code, stdout, stderr = finish(process)
    return Run(code, stdout, stderr, out, tmp), poller


def test_run_succeeds_and_the_loss_goes_down(reference: tuple[Run, MetricsPoller]) -> None:
    run, _ = reference
    assert run.code == ExitCode.SUCCEEDED, run.stderr[-4000:]
    records = run.records
    assert [r["step"] for r in records] == list(range(1, 13))  # one JSON line per step
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.96 * first, losses
    assert min(losses[-3:]) < min(losses[:3]), losses
    for record in records:
        assert record["total_steps"] == 12
        assert record["tokens_per_second"] > 0 and record["tokens"] > 0
        assert record["learning_rate"] > 0 and record["grad_norm"] is not None
        assert len(record["data"]) == 12
    assert "transformers + PEFT backend" in run.stderr  # the CPU fallback says so
    assert "loadIn4bit is ignored" in run.stderr
    assert "adamw_8bit needs bitsandbytes on a CUDA GPU; using adamw_torch" in run.stderr
    assert "via target_parameters" in run.stderr  # LoRA on the experts too


def test_termination_message(reference: tuple[Run, MetricsPoller]) -> None:
    run, _ = reference
    message = run.message
    assert message.status == "succeeded" and message.reason == "Completed"
    assert message.step == message.total_steps == 12
    assert message.loss == run.records[-1]["loss"]
    assert message.checkpoint is not None and message.checkpoint.step == 12
    assert message.checkpoint.uri == str(run.out / "checkpoint-12")
    assert message.adapter_uri == str(run.out / "final_model")
    assert message.merged_uri == str(run.out / "merged_16bit")
    assert message.resumed_from_step is None


def test_outputs_are_complete_with_manifests_and_rotated(
    reference: tuple[Run, MetricsPoller],
) -> None:
    run, _ = reference
    out = run.out
    # saveTotalLimit 2: checkpoint-4 rotated out, the newest two kept.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-8"]
    assert list((out / ".incomplete").iterdir()) == []
    for step in (8, 12):
        manifest = verify_dir(out / f"checkpoint-{step}")
        assert manifest.step == step and manifest.kind == "checkpoint"
        files = {f.path for f in manifest.files}
        assert {
            "adapter_model.safetensors",
            "adapter_config.json",
            "optimizer.pt",
            "scheduler.pt",
            "trainer_state.json",
            "metrics.jsonl",
        } <= files
        assert any(name.startswith("rng_state") for name in files)
    final = verify_dir(out / "final_model")
    assert final.kind == "final_model" and final.step == 12
    files = {f.path for f in final.files}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "metrics.jsonl",
        "loss.png",
        "tokenizer.json",
    } <= files
    adapter = json.loads((out / "final_model" / "adapter_config.json").read_text())
    assert adapter["r"] == 8
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert set(adapter["target_parameters"]) == {
        "mlp.experts.gate_up_proj",
        "mlp.experts.down_proj",
    }
    history = [json.loads(line) for line in (out / "final_model" / "metrics.jsonl").open()]
    assert [r["step"] for r in history] == list(range(1, 13))
    assert (out / "final_model" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    merged = verify_dir(out / "merged_16bit")
    assert merged.kind == "merged_16bit"
    assert "config.json" in {f.path for f in merged.files}
    fingerprints = {
        verify_dir(out / n).fingerprint
        for n in ("checkpoint-8", "checkpoint-12", "final_model", "merged_16bit")
    }
    assert len(fingerprints) == 1


def test_metrics_endpoint_reports_progress_during_the_run(
    reference: tuple[Run, MetricsPoller],
) -> None:
    _, poller = reference
    assert poller.samples, "the endpoint was never reachable"
    steps = [s.step for s in poller.samples if s.step is not None]
    assert steps and max(steps) >= 6 and steps == sorted(steps)
    assert any(s.loss is not None for s in poller.samples)
    assert any(s.total_steps == 12 for s in poller.samples)
    assert any(s.checkpoint_step == 4 for s in poller.samples)
    served = {
        line.split(" ")[0].split("{")[0]
        for line in poller.raw[-1].splitlines()
        if line and not line.startswith("#") and not line.startswith("process_")
    }
    contract = {v for k, v in vars(Metric).items() if not k.startswith("_")}
    # The counter and the info metric get the suffixes Prometheus' naming guide gives them.
    contract -= {Metric.TOKENS, Metric.INFO}
    contract |= {f"{Metric.TOKENS}_total", f"{Metric.TOKENS}_created", f"{Metric.INFO}_info"}
    assert served == contract


def test_sigkill_then_resume_continues_with_the_same_data(
    reference: tuple[Run, MetricsPoller],
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    tmp_path: Path,
) -> None:
    ref, _ = reference
    out = tmp_path / "out"
    config = tiny_config(tiny_model_dir, tiny_dataset_path, str(out))
    env = cli_env(tmp_path)
    process = start_cli(config, tmp_path, env)
    wait_for(lambda: (out / "checkpoint-4" / "manifest.json").exists(), process)
    process.send_signal(signal.SIGKILL)
    _, killed_stdout, _ = finish(process)
    killed_steps = [r["step"] for r in json_records(killed_stdout)]
    assert killed_steps and max(killed_steps) < 12

    complete = [int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/manifest.json")]
    start = max(complete)

    resumed = run_to_end(config, tmp_path, out)

    assert resumed.code == 0, resumed.stderr[-4000:]
    assert f"resuming from checkpoint-{start} (step {start})" in resumed.stderr
    assert resumed.message.resumed_from_step == start
    records = resumed.records
    assert [r["step"] for r in records] == list(range(start + 1, 13))
    # Steps run in all: at most maxSteps plus one checkpoint interval.
    assert len(killed_steps) + len(records) <= 12 + 4
    reference_by_step = {r["step"]: r for r in ref.records}
    for record in records:
        expected = reference_by_step[record["step"]]
        assert record["data"] == expected["data"], f"different data at step {record['step']}"
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-3, abs=1e-4)
    history = [json.loads(line) for line in (out / "final_model" / "metrics.jsonl").open()]
    assert [r["step"] for r in history] == list(range(1, 13))


def test_sigterm_checkpoints_then_exits_interrupted(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = tiny_config(tiny_model_dir, tiny_dataset_path, str(out), maxSteps=2000, saveSteps=2000)
    process = start_cli(config, tmp_path, cli_env(tmp_path))
    assert process.stdout is not None
    first = process.stdout.readline()  # the first step's JSON line: training is under way
    assert json.loads(first)["step"] >= 1
    process.send_signal(signal.SIGTERM)
    code, _, stderr = finish(process)

    assert code == int(ExitCode.INTERRUPTED) == 75, stderr[-4000:]
    message = termination(tmp_path)
    assert message.status == "interrupted"
    assert message.checkpoint is not None
    step = message.checkpoint.step
    assert 1 <= step < 2000 and message.step == step
    assert message.checkpoint.uri == str(out / f"checkpoint-{step}")
    assert f"checkpoint-{step}" in message.message
    assert verify_dir(out / f"checkpoint-{step}").step == step
    assert not (out / "final_model").exists()
    assert "received SIGTERM" in stderr


def test_corrupt_newest_falls_back_and_incompatible_config_is_refused(
    reference: tuple[Run, MetricsPoller],
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    tmp_path: Path,
) -> None:
    ref, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref.out, out)
    config = reference_config(tiny_model_dir, tiny_dataset_path, out)

    # Rerunning a finished run reports it, without training again.
    again = run_to_end(config, tmp_path, out)
    assert again.code == 0, again.stderr[-4000:]
    assert again.message.reason == "AlreadyCompleted"
    assert again.message.adapter_uri == str(out / "final_model")
    assert again.message.checkpoint is not None and again.message.checkpoint.step == 12
    assert again.records == []
    assert "backend:" not in again.stderr  # recognised before the backend (torch) loads

    # The final adapter is lost and the newest checkpoint has a flipped byte.
    shutil.rmtree(out / "final_model")
    weights = out / "checkpoint-12" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    fallback = run_to_end(config, tmp_path, out)
    assert fallback.code == 0, fallback.stderr[-4000:]
    assert "checkpoint-12 is not usable: adapter_model.safetensors does not match" in (
        fallback.stderr
    )
    assert "resuming from checkpoint-8 (step 8)" in fallback.stderr
    assert fallback.message.resumed_from_step == 8
    assert [r["step"] for r in fallback.records] == [9, 10, 11, 12]
    assert verify_dir(out / "checkpoint-12").step == 12  # rewritten, complete again
    by_step = {r["step"]: r for r in ref.records}
    assert [r["data"] for r in fallback.records] == [by_step[s]["data"] for s in (9, 10, 11, 12)]

    # A different training config may not reuse this output.
    changed = reference_config(tiny_model_dir, tiny_dataset_path, out, learningRate=1e-3)
    refused = run_to_end(changed, tmp_path, out)
    assert refused.code == ExitCode.INVALID_INPUT
    assert refused.message.reason == "IncompatibleCheckpoint"
    assert "new output path" in refused.message.message


def test_bad_data_exits_78_naming_the_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "wizard", "content": "?"}]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_config(tiny_model_dir, data, str(tmp_path / "out"))
    result = run_cli(
        ["--config", str(write_config(tmp_path / "c.yaml", config))], cli_env(tmp_path)
    )
    assert result.returncode == 78, result.stderr[-4000:]
    message = termination(tmp_path)
    assert message.status == "invalid_input" and message.reason == "InvalidDataset"
    assert "row 1" in message.message


def test_dry_run_prints_the_plan_without_loading_weights(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, tiny_dataset_path, str(tmp_path / "out"))
    config["dataset"].pop("maxSamples")
    path = write_config(tmp_path / "c.yaml", config)
    result = run_cli(
        ["--config", str(path), "--dry-run"], cli_env(tmp_path), python_flags=("-X", "importtime")
    )
    assert result.returncode == 0, result.stderr[-4000:]
    plan = json.loads(
        next(line for line in result.stdout.splitlines() if line.startswith('{"plan"'))
    )["plan"]
    assert plan["data"]["rows_in"] == 64
    assert plan["data"]["rows_used"] + plan["data"]["skipped_overlong"] == 64
    assert plan["data"]["loss_tokens"] < plan["data"]["tokens"]
    assert plan["steps"]["total_steps"] == 12 and plan["steps"]["effective_batch"] == 4
    assert plan["steps"]["epochs"] == pytest.approx(12 / plan["steps"]["steps_per_epoch"], abs=1e-3)
    assert plan["memory_gib"]["total"] > 0 and plan["lora_params"] > 0
    assert "optimizer steps" in result.stdout and "GPU memory" in result.stdout
    assert not (tmp_path / "out").exists()  # nothing written
    assert termination(tmp_path).reason == "DryRunPassed"
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "peft" not in imported and "trl" not in imported
    assert not any(name.startswith("transformers.models.gpt_oss.modeling") for name in imported)


@pytest.mark.parametrize("flags", [[], ["--dry-run"]], ids=["training", "dry-run"])
def test_a_lora_target_the_model_lacks_exits_78_naming_the_field(
    tiny_model_dir: Path, tiny_dataset_path: Path, tmp_path: Path, flags: list[str]
) -> None:
    # Training judges the loaded model's modules; the dry run the checkpoint's tensor names.
    config = tiny_config(tiny_model_dir, tiny_dataset_path, str(tmp_path / "out"))
    config["lora"] = {"targetModules": ["q_proj", "q_projj"]}
    result = run_cli(
        ["--config", str(write_config(tmp_path / "c.yaml", config)), *flags], cli_env(tmp_path)
    )
    assert result.returncode == 78, result.stderr[-4000:]
    message = termination(tmp_path)
    assert message.reason == "InvalidConfig"
    assert "lora.targetModules" in message.message and "q_projj" in message.message
    assert "the names this model has: " in message.message and "o_proj" in message.message


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "training"])
@pytest.mark.parametrize(
    "broken, expected",
    [
        ("not_json", "config.json is not a valid JSON file"),
        ("unknown_model_type", "model_type 'no_such_architecture'"),
    ],
)
def test_a_model_that_cannot_load_exits_78_naming_the_field(
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    tmp_path: Path,
    broken: str,
    expected: str,
    dry_run: bool,
) -> None:
    model = tmp_path / "model"  # complete, but its config.json is unusable
    shutil.copytree(tiny_model_dir, model)
    if broken == "not_json":
        (model / "config.json").write_text("{")
    else:
        model_config = json.loads((model / "config.json").read_text())
        model_config["model_type"] = "no_such_architecture"
        (model / "config.json").write_text(json.dumps(model_config))
    config = tiny_config(model, tiny_dataset_path, str(tmp_path / "out"))
    # No scratch directory given: the run makes its own under TMPDIR and removes it at exit.
    env = cli_env(tmp_path, TMPDIR=str(tmp_path / "tmp"))
    del env["FTO_SCRATCH_DIR"]
    (tmp_path / "tmp").mkdir()
    args = ["--config", str(write_config(tmp_path / "c.yaml", config))]
    result = run_cli([*args, "--dry-run"] if dry_run else args, env)
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr[-4000:]
    message = termination(tmp_path)
    assert message.status == "invalid_input" and message.reason == "InvalidModel"
    assert message.message.startswith(f"model.path {model}")
    assert expected in message.message
    assert f"scratch: {tmp_path / 'tmp'}/finetune-scratch-" in result.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
