"""Real training runs end to end: `kubectl apply` of a FineTuneJob, the operator's Job, the
node agent running the real trainer on a tiny gpt-oss model on CPU, and the outputs on a PVC
or the S3 server. Covers live progress, manifests, loading the adapter back, credentials
that never leak, resume after a killed trainer, disruptions that do not count as failures,
bad data that fails fast, and suspend/resume while training."""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.pytest_plugin import MakePvc, PodLogs

from .conftest import OperatorHandle
from .ftj import FineTuneJobs
from .training_helpers import (
    DATASET_FILE,
    INPUT_CLAIM,
    MAX_STEPS,
    MODEL_DIR,
    MODEL_WIDTH,
    OUTPUT_CLAIM,
    StatusHistory,
    apply_s3_credentials,
    check_manifest_dir,
    check_manifest_s3,
    check_run_times,
    complete_checkpoints,
    generate_with_adapter,
    host_path,
    pod_phase,
    pods_oldest_first,
    split_s3_uri,
    trainer_steps,
    training_spec,
)

pytestmark = pytest.mark.e2e

# Generous: two cores shared with other work; a run takes well under a minute when idle.
RUN_TIMEOUT = 300
RESUMED = re.compile(r"resuming from checkpoint-(\d+) \(step (\d+)\)")
COMMITTED = re.compile(r"checkpoint-(\d+) complete:")
INTERRUPTED = re.compile(r"stopping after step (\d+) on SIGTERM: checkpointing first")


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny gpt-oss model and the dataset, generated once per session."""
    from finetune_trainer.fixtures import write_tiny_dataset, write_tiny_model

    root = tmp_path_factory.mktemp("tiny-inputs")
    write_tiny_model(root / MODEL_DIR, hidden_size=MODEL_WIDTH, intermediate_size=MODEL_WIDTH)
    write_tiny_dataset(root / DATASET_FILE, rows=64)
    return root


@pytest.fixture
def claims(namespace: str, make_pvc: MakePvc, tiny_inputs: Path) -> dict[str, Path]:
    """The `inputs` PVC (holding a copy of the model and dataset) and an empty `outputs`
    PVC; maps each claim name to its PV's directory on this machine."""
    inputs = make_pvc(namespace, INPUT_CLAIM)
    shutil.copytree(tiny_inputs, inputs, dirs_exist_ok=True)
    return {INPUT_CLAIM: inputs, OUTPUT_CLAIM: make_pvc(namespace, OUTPUT_CLAIM)}


@pytest.fixture(autouse=True)
def no_trainer_left_behind(
    ftjs: FineTuneJobs, cluster: LocalCluster, make_pvc: MakePvc, wait_for: Callable[..., Any]
) -> Iterator[None]:
    """After each test, delete its FineTuneJobs and wait until every pod is gone and its
    processes have ended, so no trainer outlives its test (or slows the next one). It asks
    for make_pvc so that the PVs are removed only after the trainers have stopped."""
    yield
    assert cluster.agent is not None
    agent = cluster.agent
    seen = [p["metadata"]["name"] for p in _pods(ftjs)]
    try:
        ftjs.kubectl("delete", "finetunejobs", "--all", "--wait=true", "--timeout=60s")
    finally:
        # Also when the deletion fails or times out: the wait says whether trainers are
        # still running, and keeps the PVs until they have stopped.
        wait_for(
            lambda: not _pods(ftjs) and not any(agent.pod_active(ftjs.namespace, n) for n in seen),
            timeout=120,
            interval=0.5,
            message=f"the trainer pods of {ftjs.namespace} to be gone",
        )


def _pods(ftjs: FineTuneJobs) -> list[dict[str, Any]]:
    """Every pod in the test's namespace."""
    out = ftjs.kubectl("get", "pods", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _finished(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def _wait_finished(ftjs: FineTuneJobs, name: str) -> dict[str, Any]:
    status: dict[str, Any] = ftjs.wait_status(
        name, _finished, timeout=RUN_TIMEOUT, what=f"{name} to finish training"
    )
    return status


def _running_pod_after_first_checkpoint(
    ftjs: FineTuneJobs, name: str, output_dir: Path, wait_for: Callable[..., Any]
) -> tuple[str, int]:
    """Wait until the trainer has committed its first checkpoint (its manifest is on the
    PV); return the still-running trainer pod and that checkpoint's step."""
    steps = wait_for(
        lambda: complete_checkpoints(output_dir),
        timeout=RUN_TIMEOUT,
        interval=0.1,
        message=f"the first checkpoint of {name} under {output_dir}",
    )
    uid = ftjs.get(name)["metadata"]["uid"]
    pods = ftjs.pods(uid)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    assert pod_phase(pods[0]) == "Running", (
        f"the trainer was no longer running after checkpoint-{steps[0]} "
        f"({pod_phase(pods[0])}): the run is too short to act on"
    )
    return pods[0]["metadata"]["name"], steps[0]


def _second_pod(ftjs: FineTuneJobs, name: str, first: str) -> str:
    """The one trainer pod that replaced ``first``."""
    uid = ftjs.get(name)["metadata"]["uid"]
    others = [p for p in pods_oldest_first(ftjs.pods(uid)) if p["metadata"]["name"] != first]
    assert others, f"no pod replaced {first}: did it finish before it was stopped?"
    assert len(others) == 1, [(p["metadata"]["name"], pod_phase(p)) for p in others]
    return str(others[0]["metadata"]["name"])


def _wait_pod_failed(
    ftjs: FineTuneJobs, name: str, pod_name: str, wait_for: Callable[..., Any]
) -> None:
    """Wait until the agent reports ``pod_name`` Failed: its processes have ended."""
    uid = ftjs.get(name)["metadata"]["uid"]

    def failed() -> bool:
        pods = [p for p in ftjs.pods(uid) if p["metadata"]["name"] == pod_name]
        return bool(pods) and pod_phase(pods[0]) == "Failed"

    wait_for(failed, timeout=60, interval=0.1, message=f"{pod_name} to fail after its kill")


def _resumed_step(log: str) -> int:
    match = RESUMED.search(log)
    assert match, f"no 'resuming from checkpoint-N (step N)' in the new trainer's log:\n{log}"
    assert match[1] == match[2]
    return int(match[1])


def test_pvc_output_reports_progress_and_writes_a_loadable_adapter(
    ftjs: FineTuneJobs, cluster: LocalCluster, claims: dict[str, Path], tiny_inputs: Path
) -> None:
    name = "pvc-run"
    with StatusHistory(cluster, ftjs.namespace, name) as history:
        ftjs.apply(name, training_spec(save_steps=4))
        status = _wait_finished(ftjs, name)
        history.wait_for_phase(status["phase"])
    assert status["phase"] == "Succeeded", status
    check_run_times(status)
    assert history.phases() == ["Pending", "Running", "Succeeded"]
    # The operator read these from the live metrics endpoint while the trainer ran. After
    # its first steps the tiny model trains the rest in a second or two, so how many
    # 1-second polls fall inside the run varies: two readings or more, in order.
    steps = history.running_steps()
    assert len(steps) >= 2 and steps == sorted(steps), steps
    progress = status["progress"]
    assert (progress["step"], progress["totalSteps"]) == (MAX_STEPS, MAX_STEPS)
    assert progress["summary"] == f"{MAX_STEPS}/{MAX_STEPS}" and progress["loss"] > 0

    adapter = host_path(status["output"]["adapterUri"], claims)
    assert adapter.name == "final_model"
    final = check_manifest_dir(adapter)
    assert (final["kind"], final["step"]) == ("final_model", MAX_STEPS)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {
        f["path"] for f in final["files"]
    }
    checkpoint = status["checkpoint"]
    assert checkpoint["step"] == MAX_STEPS
    newest = check_manifest_dir(host_path(checkpoint["uri"], claims))
    assert (newest["kind"], newest["step"]) == ("checkpoint", MAX_STEPS)
    assert complete_checkpoints(adapter.parent) == [4, 8, 12]
    for step in (4, 8):
        assert check_manifest_dir(adapter.parent / f"checkpoint-{step}")["step"] == step

    assert len(generate_with_adapter(tiny_inputs / MODEL_DIR, adapter)) == 4
    ftjs.reasons(name, "Running", "Checkpoint", "Succeeded")
    # As for a batch/v1 Job: kubectl waits on Complete (and Failed).
    ftjs.kubectl("wait", f"finetunejob/{name}", "--for=condition=Complete", "--timeout=10s")
    failed = ftjs.kubectl(
        "wait", f"finetunejob/{name}", "--for=condition=Failed", "--timeout=1s", check=False
    )
    assert failed.returncode != 0


def test_s3_output_uploads_checkpoints_and_never_exposes_credentials(
    ftjs: FineTuneJobs,
    claims: dict[str, Path],
    s3_server: Any,
    pod_logs: PodLogs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="finetune_operator")
    caplog.set_level(logging.DEBUG, logger="kopf")
    bucket = s3_server.create_bucket(f"e2e-{uuid.uuid4().hex[:12]}")
    apply_s3_credentials(ftjs.kubectl, s3_server)
    uri = f"s3://{bucket}/runs/s3-run"
    output = {
        "s3": {
            "uri": uri,
            "endpoint": s3_server.endpoint,
            "region": s3_server.region,
            "credentialsSecretRef": {"name": "s3-credentials"},
        }
    }
    name = "s3-run"
    ftjs.apply(name, training_spec(save_steps=4, output=output))
    status = _wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status

    s3 = s3_server.client()
    _, prefix = split_s3_uri(uri)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    checkpoint_manifest = re.compile(rf"{re.escape(prefix)}/checkpoint-(\d+)/manifest\.json")
    steps = sorted(int(m[1]) for k in keys if (m := checkpoint_manifest.fullmatch(k)))
    assert steps == [4, 8, 12], keys
    for step in steps:
        manifest = check_manifest_s3(s3, bucket, f"{prefix}/checkpoint-{step}")
        assert (manifest["kind"], manifest["step"]) == ("checkpoint", step)
    latest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/latest")["Body"].read())
    assert latest["step"] == MAX_STEPS and latest["checkpoint"] == f"checkpoint-{MAX_STEPS}"
    assert status["output"]["adapterUri"] == f"{uri}/final_model"
    assert check_manifest_s3(s3, bucket, f"{prefix}/final_model")["kind"] == "final_model"
    assert status["checkpoint"] == {"step": MAX_STEPS, "uri": f"{uri}/checkpoint-{MAX_STEPS}"}

    # The Job references the Secret; nothing anywhere holds its values.
    job = ftjs.jobs(name)[0]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FTO_S3_OUTPUT_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)
    trainer_log = pod_logs(ftjs.namespace, pod["metadata"]["name"])
    assert "final_model complete" in trainer_log
    operator_records = [r for r in caplog.records if r.name.startswith("finetune_operator")]
    assert any(name in r.getMessage() for r in operator_records), "no operator log captured"
    places = {
        "the FineTuneJob": ftjs.kubectl("get", "finetunejob", name, "-o", "yaml").stdout,
        "the Events": ftjs.kubectl("get", "events", "-o", "yaml").stdout,
        "the Job": ftjs.kubectl("get", "job", job["metadata"]["name"], "-o", "yaml").stdout,
        "the namespace's ConfigMaps": ftjs.kubectl("get", "configmaps", "-o", "yaml").stdout,
        "the pod": ftjs.kubectl("get", "pod", pod["metadata"]["name"], "-o", "yaml").stdout,
        "the operator's log": caplog.text,
        "the trainer's log": trainer_log,
    }
    for where, text in places.items():
        assert s3_server.access_key not in text, f"the S3 access key appears in {where}"
        assert s3_server.secret_key not in text, f"the S3 secret key appears in {where}"


def test_killed_trainer_resumes_from_its_last_periodic_checkpoint(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],
    pod_logs: PodLogs,
    wait_for: Callable[..., Any],
) -> None:
    name, save_steps = "resume", 4
    ftjs.apply(name, training_spec(save_steps=save_steps))
    first, seen = _running_pod_after_first_checkpoint(ftjs, name, claims[OUTPUT_CLAIM], wait_for)
    assert seen == save_steps
    # A hard failure (OOM kill, crash): SIGKILL with no SIGTERM first, so the trainer cannot
    # save anything more; a deletion, even forced, would let it checkpoint on SIGTERM.
    assert cluster.agent is not None
    assert cluster.agent.kill_containers(ftjs.namespace, first) == 1
    # What the killed trainer committed is what is on the PV once it has died: the kill can
    # land after a checkpoint's manifest is written and before the trainer logs
    # "checkpoint-N complete", so its log can name one checkpoint fewer. The retry cannot
    # have written any yet: it starts only after the failure, then loads and trains.
    _wait_pod_failed(ftjs, name, first, wait_for)
    committed = complete_checkpoints(claims[OUTPUT_CLAIM])
    status = _wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status

    first_log = pod_logs(ftjs.namespace, first)
    assert not INTERRUPTED.search(first_log), first_log
    second_log = pod_logs(ftjs.namespace, _second_pod(ftjs, name, first))
    resumed = _resumed_step(second_log)
    logged = [int(s) for s in COMMITTED.findall(first_log)]
    assert set(logged) <= set(committed), (logged, committed)
    # The retry starts from the newest periodic checkpoint the killed trainer committed
    # (a later one it was still writing has no manifest and is skipped).
    assert committed and all(s % save_steps == 0 for s in committed), committed
    assert resumed == max(committed) >= seen, (resumed, committed, logged)
    first_steps, second_steps = trainer_steps(first_log), trainer_steps(second_log)
    assert second_steps[0] == resumed + 1 and second_steps[-1] == MAX_STEPS, second_steps
    # A failure costs at most one checkpoint interval of steps.
    assert max(first_steps) - resumed <= save_steps, (first_steps, resumed)
    assert len(first_steps) + len(second_steps) <= MAX_STEPS + save_steps
    assert status["restarts"] == 1, status
    ftjs.reasons(name, "Restarted")


def test_disruption_does_not_count_against_backoff_limit(
    ftjs: FineTuneJobs, claims: dict[str, Path], wait_for: Callable[..., Any]
) -> None:
    name = "disrupted"
    ftjs.apply(name, training_spec(save_steps=2, lifecycle={"backoffLimit": 0}))
    pod, _ = _running_pod_after_first_checkpoint(ftjs, name, claims[OUTPUT_CLAIM], wait_for)
    # What the scheduler does when it preempts a pod: mark it, then delete it. The
    # transition time matters: the disruption controller resets a DisruptionTarget condition
    # older than two minutes on a pod that is not being deleted (and null counts as old).
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": "Preempted in order to admit critical pod",
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    patch = json.dumps({"status": {"conditions": [condition]}})
    ftjs.kubectl("patch", "pod", pod, "--subresource=status", "--type=strategic", "-p", patch)
    ftjs.kubectl("delete", "pod", pod, "--wait=false")
    status = _wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status
    second = _second_pod(ftjs, name, pod)  # the Job replaced it despite backoffLimit 0
    job = ftjs.jobs(name)[0]
    assert not job["status"].get("failed"), job["status"]
    # Not a failure, but a restart all the same, though the preempted pod was deleted.
    assert (status["restarts"], status["podName"]) == (1, second), status
    ftjs.reasons(name, "Restarted")


def test_bad_dataset_fails_fast_with_the_trainers_message(
    ftjs: FineTuneJobs, claims: dict[str, Path], pod_logs: PodLogs
) -> None:
    rows = [json.loads(line) for line in (claims[INPUT_CLAIM] / DATASET_FILE).open()]
    rows[5]["messages"][1]["role"] = "bot"
    bad = claims[INPUT_CLAIM] / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    name = "bad-data"
    ftjs.apply(name, training_spec(dataset_file=bad.name, lifecycle={"backoffLimit": 3}))
    status = ftjs.wait_phase(name, "Failed", timeout=RUN_TIMEOUT)
    assert status["reason"] == "InvalidDataset", status
    assert "dataset row 5" in status["message"] and "'bot'" in status["message"], status
    assert status["restarts"] == 0
    check_run_times(status)
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)  # the first attempt only: no retry
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 78
    assert "'bot'" in pod_logs(ftjs.namespace, pod["metadata"]["name"])
    reasons = ftjs.reasons(name, "InvalidDataset")
    assert "Restarted" not in reasons, reasons
    ftjs.kubectl("wait", f"finetunejob/{name}", "--for=condition=Failed", "--timeout=10s")


def test_a_finished_job_is_cleaned_up_only_after_its_outcome_is_recorded(
    ftjs: FineTuneJobs, claims: dict[str, Path]
) -> None:
    # ttlSecondsAfterFinished 0 would let the Job vanish the moment it fails; the operator
    # adds the TTL only once the status holds the trainer's reason, and keeps that reason
    # while the Job's foreground deletion removes its pods first.
    (claims[INPUT_CLAIM] / "empty.jsonl").write_text("")
    name = "cleaned-up"
    lifecycle = {"backoffLimit": 0, "ttlSecondsAfterFinished": 0}
    ftjs.apply(name, training_spec(dataset_file="empty.jsonl", lifecycle=lifecycle))
    status = ftjs.wait_phase(name, "Failed", timeout=RUN_TIMEOUT)
    assert status["reason"] == "InvalidDataset", json.dumps(status, indent=1)
    uid = ftjs.get(name)["metadata"]["uid"]
    ftjs.wait_status(name, lambda s: not ftjs.jobs_by_uid(uid), what="the Job cleaned up")
    status = ftjs.status(name)
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidDataset")


def test_suspend_checkpoints_and_unsuspend_resumes(
    ftjs: FineTuneJobs,
    claims: dict[str, Path],
    pod_logs: PodLogs,
    wait_for: Callable[..., Any],
) -> None:
    name = "suspended"
    ftjs.apply(name, training_spec(save_steps=2))
    first, seen = _running_pod_after_first_checkpoint(ftjs, name, claims[OUTPUT_CLAIM], wait_for)
    ftjs.patch(name, {"spec": {"lifecycle": {"suspend": True}}})
    uid = ftjs.get(name)["metadata"]["uid"]
    # The Job controller deletes the pod; the trainer checkpoints within its grace period.
    wait_for(
        lambda: not ftjs.pods(uid), timeout=120, message="the suspended trainer pod to go away"
    )
    ftjs.wait_status(
        name,
        lambda s: s.get("phase") == "Suspended" and s["message"].startswith("suspended;"),
        what=f"{name} to be Suspended with no trainer running",
    )
    first_log = pod_logs(ftjs.namespace, first)
    interrupted = INTERRUPTED.search(first_log)
    assert interrupted, f"the trainer did not stop with a checkpoint on SIGTERM:\n{first_log}"
    stopped_at = int(interrupted[1])
    assert stopped_at >= seen and f"checkpoint-{stopped_at} complete" in first_log
    assert stopped_at < MAX_STEPS
    (checkpoint,) = claims[OUTPUT_CLAIM].glob(f"**/checkpoint-{stopped_at}")
    assert check_manifest_dir(checkpoint)["step"] == stopped_at

    ftjs.patch(name, {"spec": {"lifecycle": {"suspend": False}}})
    status = _wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status
    second_log = pod_logs(ftjs.namespace, _second_pod(ftjs, name, first))
    assert _resumed_step(second_log) == stopped_at
    second_steps = trainer_steps(second_log)
    assert second_steps[0] == stopped_at + 1 and second_steps[-1] == MAX_STEPS, second_steps


def test_an_operator_restarted_mid_run_follows_the_same_trainer_to_success(
    ftjs: FineTuneJobs,
    operator: OperatorHandle,
    claims: dict[str, Path],
    wait_for: Callable[..., Any],
) -> None:
    # The operator keeps no state of its own: a new process finds the Job it created,
    # reads the running trainer's progress, and records the outcome.
    name = "operator-restart"
    ftjs.apply(name, training_spec(save_steps=2))
    pod, _ = _running_pod_after_first_checkpoint(ftjs, name, claims[OUTPUT_CLAIM], wait_for)
    operator.stop()
    operator.start()
    status = _wait_finished(ftjs, name)
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["summary"] == f"{MAX_STEPS}/{MAX_STEPS}"
    assert status.get("restarts", 0) == 0
    assert len(ftjs.jobs(name)) == 1
    uid = ftjs.get(name)["metadata"]["uid"]
    assert [p["metadata"]["name"] for p in ftjs.pods(uid)] == [pod]


def test_a_diverging_run_fails_diverged_keeping_its_checkpoint_and_is_not_retried(
    ftjs: FineTuneJobs, claims: dict[str, Path], pod_logs: PodLogs
) -> None:
    # A learning rate of 1.0 on a strongly scaled adapter: after warm-up (learning rates 0,
    # 0.5, 1.0) the tiny model's loss climbs from about 10.7 to about 12.3 at step 4, past
    # maxLoss. Step 4 is also a checkpoint step: that checkpoint must not be written.
    spec = training_spec(save_steps=2, lifecycle={"backoffLimit": 3})
    spec["lora"] = {"rank": 64, "alpha": 4096, "useRslora": True}
    spec["training"].update({"maxSteps": 6, "learningRate": 1.0, "divergence": {"maxLoss": 11.5}})
    name = "diverging"
    ftjs.apply(name, spec)
    status = ftjs.wait_phase(name, "Failed", timeout=RUN_TIMEOUT)
    assert status["reason"] == "Diverged", json.dumps(status, indent=1)
    message = status["message"]
    assert message.startswith("training diverged at step 4: the training loss 12."), message
    assert "above training.divergence.maxLoss (11.5)" in message
    assert "lower training.learningRate (now 1)" in message
    assert "(checkpoint-2, from before the divergence, is kept)" in message
    assert status["restarts"] == 0
    check_run_times(status)
    checkpoint = status["checkpoint"]
    assert checkpoint["step"] == 2, status
    kept = host_path(checkpoint["uri"], claims)
    assert check_manifest_dir(kept)["step"] == 2
    assert complete_checkpoints(kept.parent) == [2]
    assert not (kept.parent / "final_model").exists()
    assert "output" not in status or not status["output"].get("adapterUri"), status
    uid = ftjs.get(name)["metadata"]["uid"]
    (pod,) = ftjs.pods(uid)  # the first attempt only: no retry
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 78
    assert trainer_steps(pod_logs(ftjs.namespace, pod["metadata"]["name"])) == [1, 2, 3, 4]
    reasons = ftjs.reasons(name, "Diverged")
    assert "Restarted" not in reasons, reasons
