"""The operator's Prometheus endpoint."""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter

from finetune_operator.config import OperatorConfig
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.reasons import metric_reason


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_phase_gauge_counts_what_the_cache_holds_when_scraped() -> None:
    metrics = OperatorMetrics()
    value = metrics.registry.get_sample_value
    assert value("finetune_operator_finetunejobs", {"phase": "Running"}) == 0  # not wired yet
    phases = Counter({"Running": 2, "Failed": 1})
    metrics.watch(lambda: phases, lambda: {"pods": 3}, lambda: 4)
    assert value("finetune_operator_finetunejobs", {"phase": "Running"}) == 2
    assert value("finetune_operator_finetunejobs", {"phase": "Failed"}) == 1
    assert value("finetune_operator_finetunejobs", {"phase": "Succeeded"}) == 0
    assert value("finetune_operator_cached_objects", {"kind": "pods"}) == 3
    assert value("finetune_operator_workqueue_depth") == 4
    phases.clear()
    assert value("finetune_operator_finetunejobs", {"phase": "Running"}) == 0


def test_reason_labels_come_from_a_fixed_set() -> None:
    assert metric_reason("InvalidDataset") == "InvalidDataset"
    assert metric_reason("Unschedulable") == "Unschedulable"
    assert metric_reason("Pwned-" + "x" * 100) == "Other"


def test_served_in_prometheus_text_format() -> None:
    metrics = OperatorMetrics()
    metrics.jobs_created.inc()
    metrics.reconciles.labels("ok").inc(3)
    port = free_port()
    metrics.serve("127.0.0.1", port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "finetune_operator_jobs_created_total 1.0" in text
    assert 'finetune_operator_reconciles_total{result="ok"} 3.0' in text


def test_port_zero_disables_and_settings_come_from_the_environment() -> None:
    OperatorMetrics().serve("127.0.0.1", 0)  # no server, no error
    config = OperatorConfig.from_env(
        {"FTO_OPERATOR_METRICS_PORT": "0", "FTO_OPERATOR_METRICS_HOST": "127.0.0.1"}
    )
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 0)
    assert OperatorConfig.from_env({}).metrics_port == 8081
