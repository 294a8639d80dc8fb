"""The metrics endpoint, the JSON step log, the loss plot and the termination message."""

from __future__ import annotations

import io
import json
import math
import time
import urllib.request
from pathlib import Path

import pytest

from finetune_api.contract import Metric, TerminationMessage, TrainerStage
from finetune_operator.scrape import parse_progress
from finetune_trainer.metrics import MetricsLog, MetricsServer, metrics_bind_host, plot_loss
from finetune_trainer.termination import termination_path, write_termination_message


def scrape(address: tuple[str, int]) -> str:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def contract_names() -> set[str]:
    return {v for k, v in vars(Metric).items() if not k.startswith("_")}


def served_names(text: str) -> set[str]:
    return {
        line.split(" ")[0].split("{")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_endpoint_serves_the_contract_metrics_and_the_process_collector() -> None:
    server = MetricsServer()
    address = server.start("127.0.0.1", _free_port())
    assert address is not None
    try:
        text = scrape(address)
        ours = {name for name in served_names(text) if not name.startswith("process_")}
        # Counters and info metrics get the suffixes the naming guide gives them.
        expected = contract_names() - {Metric.TOKENS, Metric.INFO}
        suffixed = {f"{Metric.TOKENS}_total", f"{Metric.TOKENS}_created", f"{Metric.INFO}_info"}
        assert ours == expected | suffixed
        assert "process_resident_memory_bytes" in served_names(text)
        # Nothing known yet: every gauge is NaN, which the operator's reading skips; the
        # trainer downloads what it needs from its start.
        assert parse_progress(text).model_dump(exclude_none=True) == {
            "stage": TrainerStage.DOWNLOADING
        }

        server.update(
            step=3,
            total_steps=20,
            epoch=0.15,
            loss=2.5,
            learning_rate=1e-4,
            grad_norm=0.7,
            tokens_per_second=1234.5,
            checkpoint_step=None,
        )
        progress = parse_progress(scrape(address))
        assert progress.step == 3 and progress.total_steps == 20
        assert progress.loss == 2.5 and progress.learning_rate == 1e-4
        assert progress.tokens_per_second == 1234.5 and progress.checkpoint_step is None
        server.update(checkpoint_step=2)
        assert parse_progress(scrape(address)).checkpoint_step == 2
        for stage in TrainerStage:
            server.stage(stage)
            assert parse_progress(scrape(address)).stage == stage
        # For dashboards: tokens as a counter, the newest checkpoint's time, what trains.
        server.count_tokens(1000)
        server.count_tokens(24)
        server.checkpointed(4)
        server.describe(model="unsloth/gpt-oss-20b", backend="Unsloth on CUDA", version="0.1.0")
        value = server.registry.get_sample_value
        assert value(f"{Metric.TOKENS}_total") == 1024
        assert value(Metric.CHECKPOINT_STEP) == 4
        assert abs(value(Metric.LAST_CHECKPOINT_TIMESTAMP) - time.time()) < 60
        assert (
            'finetune_info{backend="Unsloth on CUDA",model="unsloth/gpt-oss-20b",'
            'version="0.1.0"} 1.0' in scrape(address)
        )
    finally:
        server.stop()


def test_port_zero_disables_the_endpoint() -> None:
    server = MetricsServer()
    assert server.start("127.0.0.1", 0) is None
    server.stop()


def test_bind_host_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTO_METRICS_HOST", raising=False)
    monkeypatch.delenv("POD_IP", raising=False)
    assert metrics_bind_host() == "0.0.0.0"
    monkeypatch.setenv("POD_IP", "127.0.0.7")
    assert metrics_bind_host() == "127.0.0.7"
    monkeypatch.setenv("FTO_METRICS_HOST", "127.0.0.8")
    assert metrics_bind_host() == "127.0.0.8"


def test_metrics_log_prints_one_json_line_per_record_and_restores(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = MetricsLog(stream)
    log.emit({"step": 1, "loss": 2.0, "grad_norm": math.nan, "learning_rate": None})
    log.emit({"step": 2, "loss": 1.5})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 2.0, "grad_norm": None},
        {"step": 2, "loss": 1.5},
    ]
    path = tmp_path / "metrics.jsonl"
    log.write_jsonl(path)
    restored = MetricsLog(io.StringIO())
    restored.restore(path, up_to_step=1)
    assert [r["step"] for r in restored.records] == [1]


def test_loss_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    assert plot_loss([{"step": i, "loss": 3.0 / i} for i in range(1, 6)], path, "tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_loss([{"step": 1}], tmp_path / "none.png", "empty")


def test_termination_message_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "dir" / "termination-log"
    monkeypatch.setenv("FTO_TERMINATION_LOG", str(target))
    assert termination_path() == target
    message = TerminationMessage(
        status="failed", reason="TrainingFailed", message="x" * 10_000, step=3, total_steps=20
    )
    write_termination_message(message, termination_path())
    text = target.read_text()
    assert len(text.encode()) <= 4096
    decoded = TerminationMessage.decode(text)
    assert decoded is not None and decoded.step == 3 and decoded.message.endswith("[truncated]")


def test_no_termination_file_outside_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTO_TERMINATION_LOG", raising=False)
    # /dev/termination-log exists only when the kubelet created it.
    expected = Path("/dev/termination-log") if Path("/dev/termination-log").is_file() else None
    assert termination_path() == expected


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
