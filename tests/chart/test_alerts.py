"""The chart's PrometheusRule and Grafana dashboard, checked by Prometheus' own rule
checker: promtool (built from its Go module with the local control plane's binaries) loads
the rendered rules (`promtool check rules`), fires each alert on recorded series and holds
it back where it must not fire (`promtool test rules`), and parses every dashboard query."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_localcluster.binaries import Binaries

from .helm import CHART, of_kind, only, render

VALUES = {
    "metrics": {
        "operator": {"podMonitor": {"enabled": True}},
        "trainer": {"podMonitor": {"enabled": True}},
        "prometheusRule": {"enabled": True, "stalledFor": "30m", "restartsPerHour": 2},
        "grafanaDashboard": {"enabled": True},
    }
}


@pytest.fixture(scope="module")
def promtool(localcluster_binaries: Binaries) -> Path:
    return localcluster_binaries.promtool


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def rules(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The rendered PrometheusRule's groups as a Prometheus rule file, and the job labels
    of the chart's two PodMonitors."""
    objects = render(helm, VALUES)
    rule = only(objects, "PrometheusRule")
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "PodMonitor")}
    operator_monitor, trainer_monitor = sorted(monitors)  # <fullname>, <fullname>-trainer
    namespace = rule["metadata"]["namespace"]
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path, f"{namespace}/{operator_monitor}", f"{namespace}/{trainer_monitor}"


def test_the_rules_load_in_prometheus(promtool: Path, rules: tuple[Path, str, str]) -> None:
    result = _promtool(promtool, "check", "rules", str(rules[0]))
    assert "SUCCESS: 8 rules found" in result.stdout, result.stdout


def _trainer(job: str, name: str, pod: str) -> str:
    return f'{{job="{job}", namespace="ml", finetunejob="{name}", pod="{pod}"}}'


def nan(samples: int) -> str:
    """``samples`` samples of NaN, what the trainer serves for a number not known yet
    (promtool's series notation has no repeat for NaN)."""
    return " ".join(["NaN"] * samples)


def _operator(metric: str, job: str, **labels: str) -> str:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return f'{metric}{{job="{job}", namespace="finetune-system", pod="operator-0"{extra}}}'


def _alert(severity: str, summary: str, description: str, **labels: str) -> dict[str, Any]:
    """An alert promtool must find, with its labels and its annotations as Prometheus
    renders them (the templates filled in)."""
    return {
        "exp_labels": {"severity": severity, **labels},
        "exp_annotations": {"summary": summary, "description": description},
    }


STALLED = (
    "(NaN: before its first step). kubectl describe finetunejob shows its stage and "
    "conditions; the pod's log shows where it waits."
)
NOT_FINITE = (
    "The training diverged. Lower training.learningRate, lengthen the warm-up or lower "
    "training.maxGradNorm, and train again from the last checkpoint before it."
)


def test_each_alert_fires_on_recorded_series_and_only_there(
    promtool: Path, rules: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, operator, trainer = rules
    t = {"job": trainer, "namespace": "ml"}
    series = [
        # stuck: 10 steps in 10 minutes, then none for 50
        {
            "series": f"finetune_step{_trainer(trainer, 'stuck', 'stuck-0')}",
            "values": "0+1x10 10x50",
        },
        {
            "series": f"finetune_total_steps{_trainer(trainer, 'stuck', 'stuck-0')}",
            "values": "100x60",
        },
        # moving: a step a minute throughout
        {"series": f"finetune_step{_trainer(trainer, 'moving', 'moving-0')}", "values": "0+1x60"},
        {
            "series": f"finetune_total_steps{_trainer(trainer, 'moving', 'moving-0')}",
            "values": "100x60",
        },
        # young: started at minute 30, still loading at minute 45 (younger than the window);
        # the trainer serves NaN before its first step
        {
            "series": f"finetune_step{_trainer(trainer, 'young', 'young-0')}",
            "values": "_x30 " + nan(30),
        },
        {
            "series": f"finetune_total_steps{_trainer(trainer, 'young', 'young-0')}",
            "values": "_x30 " + nan(30),
        },
        # loading: NaN (no step yet) for 50 minutes: stuck before its first step
        {"series": f"finetune_step{_trainer(trainer, 'loading', 'loading-0')}", "values": nan(50)},
        {
            "series": f"finetune_total_steps{_trainer(trainer, 'loading', 'loading-0')}",
            "values": nan(50),
        },
        {"series": f"finetune_loss{_trainer(trainer, 'loading', 'loading-0')}", "values": nan(50)},
        # done: at its last step, waiting to upload, is not stalled
        {"series": f"finetune_step{_trainer(trainer, 'done', 'done-0')}", "values": "100x60"},
        {
            "series": f"finetune_total_steps{_trainer(trainer, 'done', 'done-0')}",
            "values": "100x60",
        },
        # diverged: the loss turns NaN at minute 5; exploded: it turns +Inf (both past
        # their first steps)
        {
            "series": f"finetune_loss{_trainer(trainer, 'diverged', 'diverged-0')}",
            "values": "2 1.5 1.2 1.1 1 NaN NaN",
        },
        {
            "series": f"finetune_loss{_trainer(trainer, 'exploded', 'exploded-0')}",
            "values": "2 1.5 1.2 1.1 1 Inf Inf",
        },
        *[
            {"series": f"finetune_step{_trainer(trainer, name, f'{name}-0')}", "values": "1+1x6"}
            for name in ("diverged", "exploded")
        ],
        # flapping: four pods within the hour; resumed: two (one restart, allowed)
        *[
            {
                "series": f"finetune_step{_trainer(trainer, 'flapping', f'flapping-{i}')}",
                "values": "_x" + str(10 * i) + " 1x10" if i else "1x10",
            }
            for i in range(4)
        ],
        {"series": f"finetune_step{_trainer(trainer, 'resumed', 'resumed-0')}", "values": "1x10"},
        {
            "series": f"finetune_step{_trainer(trainer, 'resumed', 'resumed-1')}",
            "values": "_x10 1x10",
        },
        # a trainer whose endpoint does not answer
        {"series": f'up{{job="{trainer}", namespace="ml", pod="silent-0"}}', "values": "0x20"},
        # the operator: a second FineTuneJob fails at minute 20, reconciles keep failing,
        # most trainer reads fail
        {
            "series": _operator(
                "finetune_operator_finetunejobs_finished_total", operator, phase="Failed"
            ),
            "values": "1x20 2x25",
        },
        {
            "series": _operator("finetune_operator_reconciles_total", operator, result="error"),
            "values": "0+1x40",
        },
        {
            "series": _operator("finetune_operator_scrapes_total", operator, result="failed"),
            "values": "0+3x40",
        },
        {
            "series": _operator("finetune_operator_scrapes_total", operator, result="ok"),
            "values": "0+1x40",
        },
        {
            "series": _operator("up", operator),
            "values": "1x40",
        },
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {
                    "eval_time": "45m",
                    "alertname": "FineTuneJobStepStalled",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "FineTuneJob ml/stuck has trained no step for 30m",
                            f"Its trainer pod stuck-0 is at step 10 {STALLED}",
                            **t,
                            finetunejob="stuck",
                            pod="stuck-0",
                        ),
                        _alert(
                            "warning",
                            "FineTuneJob ml/loading has trained no step for 30m",
                            f"Its trainer pod loading-0 is at step NaN {STALLED}",
                            **t,
                            finetunejob="loading",
                            pod="loading-0",
                        ),
                    ],
                },
                {
                    "eval_time": "6m",
                    "alertname": "FineTuneJobLossNotFinite",
                    "exp_alerts": [
                        _alert(
                            "critical",
                            f"FineTuneJob ml/{name} reports a loss that is not finite",
                            NOT_FINITE,
                            **t,
                            finetunejob=name,
                            pod=f"{name}-0",
                        )
                        for name in ("diverged", "exploded")
                    ],
                },
                {
                    "eval_time": "39m",
                    "alertname": "FineTuneJobRestarting",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "FineTuneJob ml/flapping ran 4 trainer pods in the last hour",
                            "Its trainer keeps stopping and resuming from its newest checkpoint. "
                            "status.lastFailure and the FineTuneJob's events say why.",
                            namespace="ml",
                            finetunejob="flapping",
                        )
                    ],
                },
                {"eval_time": "9m", "alertname": "FineTuneTrainerMetricsDown", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "FineTuneTrainerMetricsDown",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "Prometheus cannot read the metrics of trainer pod ml/silent-0",
                            "The trainer's metrics endpoint (port 9090) does not answer: the "
                            "process hangs, or a NetworkPolicy keeps Prometheus out.",
                            job=trainer,
                            namespace="ml",
                            pod="silent-0",
                        )
                    ],
                },
                {
                    "eval_time": "25m",
                    "alertname": "FineTuneJobsFailed",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "1 FineTuneJobs failed in the last 15 minutes",
                            "kubectl get finetunejobs -A shows which, with the reason and the "
                            "message that says what to fix.",
                            job=operator,
                            namespace="finetune-system",
                            phase="Failed",
                        )
                    ],
                },
                {"eval_time": "40m", "alertname": "FineTuneJobsFailed", "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": "FineTuneOperatorReconcileErrors",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "25m",
                    "alertname": "FineTuneOperatorReconcileErrors",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "The finetune-operator has failed to reconcile FineTuneJobs for 15 "
                            "minutes",
                            "Its log names each FineTuneJob and the error (often an API server "
                            "that refuses or does not answer); failing FineTuneJobs are retried "
                            "with a growing delay.",
                            namespace="finetune-system",
                            pod="operator-0",
                        )
                    ],
                },
                {
                    "eval_time": "30m",
                    "alertname": "FineTuneOperatorTrainerScrapesFailing",
                    "exp_alerts": [
                        _alert(
                            "warning",
                            "The finetune-operator cannot read most trainers' metrics",
                            "FineTuneJob progress in status stays behind. Check NetworkPolicies "
                            "between the operator and trainer pods (port 9090), and the "
                            "operator's log.",
                            namespace="finetune-system",
                            pod="operator-0",
                        )
                    ],
                },
                {"eval_time": "30m", "alertname": "FineTuneOperatorDown", "exp_alerts": []},
            ],
        },
        {
            # No operator series at all: its PodMonitor finds no pod.
            "interval": "1m",
            "input_series": [],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "FineTuneOperatorDown",
                    "exp_alerts": [
                        _alert(
                            "critical",
                            "Prometheus has not read the finetune-operator's metrics for 10 "
                            "minutes",
                            "No FineTuneJob is reconciled while it is down (running trainers go "
                            "on). Check the Deployment in finetune-system and its PodMonitor.",
                            job=operator,
                        )
                    ],
                },
            ],
        },
    ]
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(path)], "tests": tests}))
    _promtool(promtool, "test", "rules", str(test_file))


def test_every_dashboard_query_parses(helm: Path, promtool: Path, tmp_path: Path) -> None:
    config_map = only(
        [
            o
            for o in render(helm, VALUES)
            if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
        ],
        "ConfigMap",
    )
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["finetune-operator.json"])
    assert dashboard == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [
        v["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0].removesuffix(")")
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    assert len(queries) >= 12
    # As Grafana would send them with "All" chosen for each variable.
    records = [
        {
            "record": f"dashboard:query_{i}",
            "expr": q.replace("$namespace", ".*").replace("$finetunejob", ".*"),
        }
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    _promtool(promtool, "check", "rules", str(path))


def test_monitoring_objects_are_opt_in(helm: Path) -> None:
    kinds = {o["kind"] for o in render(helm)}
    assert "PrometheusRule" not in kinds
    assert not [o for o in render(helm) if o["metadata"]["name"].endswith("-dashboard")]
