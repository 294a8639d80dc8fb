"""An S3 outage across a suspend, end to end: the S3 server (versitygw) stops mid-run, the
trainer stages a checkpoint it cannot upload, the FineTuneJob is suspended (the Job
controller deletes the pod, the trainer gets SIGTERM and checkpoints once more), and S3
comes back on the same port within the pod's grace period. The trainer's exit waits for the
staged checkpoints to reach S3, the Suspended FineTuneJob names the checkpoint written on
stop, and the run resumes from it once un-suspended."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster import s3server
from finetune_localcluster.binaries import Binaries
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.ports import free_port
from finetune_localcluster.pytest_plugin import PodLogs
from finetune_localcluster.s3server import S3Server

from .ftj import FineTuneJobs
from .test_training import (  # noqa: F401 (fixtures)
    RESUMED,
    RUN_TIMEOUT,
    claims,
    no_trainer_left_behind,
    tiny_inputs,
)
from .training_helpers import (
    apply_s3_credentials,
    check_manifest_s3,
    pods_oldest_first,
    split_s3_uri,
    trainer_steps,
    training_spec,
)

pytestmark = pytest.mark.e2e

# The tiny model trains a few steps a second: long enough that the run is still training
# when the outage and the suspend come, short enough that the resumed run ends soon.
MAX_STEPS = 160
SAVE_STEPS = 10
INTERRUPTED = re.compile(r"stopping after step (\d+) on SIGTERM: checkpointing first")


@pytest.fixture
def outage_s3(
    localcluster_binaries: Binaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3Server]:
    """An S3 server of this test's own (the session's stays up for the other tests), which
    keeps its port and its data when stopped and started again."""
    port = free_port()
    monkeypatch.setattr(s3server, "free_port", lambda: port)
    server = S3Server(tmp_path / "s3", binaries=localcluster_binaries)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _s3_output(ftjs: FineTuneJobs, server: S3Server, uri: str) -> dict[str, Any]:
    apply_s3_credentials(ftjs.kubectl, server)
    return {
        "s3": {
            "uri": uri,
            "endpoint": server.endpoint,
            "region": server.region,
            "credentialsSecretRef": {"name": "s3-credentials"},
        }
    }


def _latest(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/latest")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    latest: dict[str, Any] = json.loads(body)
    return latest


def _staged(agent: Any, namespace: str, pod: dict[str, Any]) -> set[int]:
    """Steps of the checkpoints staged (manifest written) in the pod's scratch volume and
    not uploaded yet: the trainer removes a staged copy once it is on S3."""
    meta = pod["metadata"]
    pattern = "empty/*/output-staging/**/checkpoint-*/manifest.json"
    roots = [
        *(p / "volumes" for p in agent.pods_dir.glob(f"{namespace}_{meta['name']}_*")),
        agent.memory_dir / meta["uid"],
    ]
    return {
        int(manifest.parent.name.removeprefix("checkpoint-"))
        for root in roots
        for manifest in root.glob(pattern)
    }


def test_a_checkpoint_staged_during_an_outage_survives_a_suspend_and_is_resumed(
    ftjs: FineTuneJobs,
    cluster: LocalCluster,
    claims: dict[str, Path],  # noqa: F811
    outage_s3: S3Server,
    pod_logs: PodLogs,
    wait_for: Callable[..., Any],
) -> None:
    assert cluster.agent is not None
    agent = cluster.agent
    port = outage_s3.port
    bucket = outage_s3.create_bucket(f"outage-{uuid.uuid4().hex[:12]}")
    uri = f"s3://{bucket}/runs/outage"
    _, prefix = split_s3_uri(uri)
    s3 = outage_s3.client()
    name = "outage"
    spec = training_spec(save_steps=SAVE_STEPS, output=_s3_output(ftjs, outage_s3, uri))
    spec["training"]["maxSteps"] = MAX_STEPS
    ftjs.apply(name, spec)
    uid = ftjs.get(name)["metadata"]["uid"]

    # A first checkpoint reaches S3; then S3 goes down while the trainer runs.
    uploaded = wait_for(
        lambda: _latest(s3, bucket, prefix),
        timeout=RUN_TIMEOUT,
        interval=0.1,
        message=f"a first checkpoint of {name} on S3",
    )
    (pod,) = ftjs.pods(uid)
    first = pod["metadata"]["name"]
    outage_s3.stop()
    assert agent.pod_active(ftjs.namespace, first), "the run ended before the outage"
    # Staged before the outage, perhaps on its way up when S3 stopped.
    before = max(_staged(agent, ftjs.namespace, pod) | {uploaded["step"]})

    # A checkpoint written while S3 is down: staged in the pod's scratch only.
    def staged_during_the_outage() -> int | None:
        newest = max(_staged(agent, ftjs.namespace, pod), default=0)
        return newest if newest > before else None

    outage_step = wait_for(
        staged_during_the_outage,
        timeout=RUN_TIMEOUT,
        interval=0.1,
        message="a checkpoint staged while S3 is down",
    )
    assert outage_step < MAX_STEPS, "the run reached its end before the suspend"

    # Suspend: the Job controller deletes the pod, the trainer checkpoints on SIGTERM.
    ftjs.patch(name, {"spec": {"lifecycle": {"suspend": True}}})

    def stop_checkpoint_staged() -> int | None:
        log = pod_logs(ftjs.namespace, first)
        interrupted = INTERRUPTED.search(log)
        if interrupted and int(interrupted[1]) in _staged(agent, ftjs.namespace, pod):
            return int(interrupted[1])
        return None

    stopped_at = wait_for(
        stop_checkpoint_staged,
        timeout=60,
        interval=0.2,
        message="the trainer to stage its checkpoint on SIGTERM",
    )
    assert stopped_at >= outage_step and stopped_at < MAX_STEPS, (stopped_at, outage_step)
    # Nothing of it can have reached S3, and the trainer has not exited: it is waiting.
    assert agent.pod_active(ftjs.namespace, first), "the trainer exited with S3 still down"
    # S3 back on the same port, within the grace period.
    outage_s3.start()
    assert outage_s3.port == port

    wait_for(
        lambda: not ftjs.pods(uid) and not agent.pod_active(ftjs.namespace, first),
        timeout=120,
        interval=0.2,
        message="the suspended trainer pod to go away",
    )
    # The held exit uploaded what was staged: the checkpoint written on stop and `latest`.
    manifest = check_manifest_s3(s3, bucket, f"{prefix}/checkpoint-{stopped_at}")
    assert (manifest["kind"], manifest["step"]) == ("checkpoint", stopped_at)
    latest = _latest(s3, bucket, prefix)
    assert latest is not None
    assert (latest["step"], latest["checkpoint"]) == (stopped_at, f"checkpoint-{stopped_at}")
    first_log = pod_logs(ftjs.namespace, first)
    assert f"checkpoint-{stopped_at} complete" in first_log, first_log
    assert "lost: " not in first_log, first_log

    status = ftjs.wait_status(
        name,
        lambda s: s.get("phase") == "Suspended" and s["message"].startswith("suspended;"),
        what=f"{name} to be Suspended with no trainer running",
    )
    assert status["checkpoint"] == {
        "step": stopped_at,
        "uri": f"{uri}/checkpoint-{stopped_at}",
    }, status

    ftjs.patch(name, {"spec": {"lifecycle": {"suspend": False}}})
    status = ftjs.wait_status(
        name,
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        timeout=RUN_TIMEOUT,
        what=f"{name} to finish training",
    )
    assert status["phase"] == "Succeeded", status
    pods = pods_oldest_first(ftjs.pods(uid))
    second = [p for p in pods if p["metadata"]["name"] != first]
    assert len(second) == 1, [p["metadata"]["name"] for p in pods]
    second_log = pod_logs(ftjs.namespace, second[0]["metadata"]["name"])
    resumed = RESUMED.search(second_log)
    assert resumed and int(resumed[1]) == int(resumed[2]) == stopped_at, second_log
    steps = trainer_steps(second_log)
    assert steps[0] == stopped_at + 1 and steps[-1] == MAX_STEPS, steps
    terminated = second[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert json.loads(terminated["message"])["resumedFromStep"] == stopped_at, terminated
    assert status["progress"]["step"] == MAX_STEPS, status
    assert status["checkpoint"]["step"] == MAX_STEPS, status
