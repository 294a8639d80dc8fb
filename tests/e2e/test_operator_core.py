"""The operator core on a real control plane: admission, the Job it creates, status for
pods that cannot run, suspend/resume, garbage collection and restarts. These tests need
no training run; the full training path is in test_training.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from finetune_localcluster.waiting import wait_for
from finetune_operator.naming import child_name

from .conftest import CRD, REPO, OperatorHandle
from .ftj import FineTuneJobs

pytestmark = pytest.mark.e2e

# Every FineTuneJob names output storage that outlives its pod. The tests that use this one
# never start a pod (suspended, or refused before a Job exists): an S3 output needs no
# claim, which the operator would otherwise wait for before creating the Job.
UNBOUND_OUTPUT = {"output": {"s3": {"uri": "s3://outputs/e2e"}}}
# For tests about where a pod gets to: an S3 output needs no volume, so the scheduler and
# the node agent judge the pod on its other parts alone (nothing here gets to train).
S3_OUTPUT = {"output": {"s3": {"uri": "s3://outputs/e2e"}}}
# A spec whose pod never needs to train: the Job stays suspended.
SUSPENDED = {"lifecycle": {"suspend": True}, "resources": {"gpus": 1}, **UNBOUND_OUTPUT}
DURABLE_OUTPUT = "set spec.output.pvc (a PersistentVolumeClaim) or spec.output.s3"


def test_example_manifest_creates_exactly_one_job(ftjs: FineTuneJobs) -> None:
    example = yaml.safe_load((REPO / "examples" / "finetunejob.yaml").read_text())
    example["metadata"]["namespace"] = ftjs.namespace
    example["spec"]["lifecycle"]["suspend"] = True  # no pod: we check the Job's spec only
    # The Job is created once the output claim the example names exists; unbound is enough.
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": example["spec"]["output"]["pvc"]["claimName"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    ftjs.kubectl("apply", "-f", "-", input=yaml.safe_dump(claim))
    ftjs.kubectl("apply", "-f", "-", input=yaml.safe_dump(example))
    name = example["metadata"]["name"]
    status = ftjs.wait_phase(name, "Suspended")
    jobs = ftjs.jobs(name)
    assert len(jobs) == 1
    job = jobs[0]
    uid = ftjs.get(name)["metadata"]["uid"]
    assert job["metadata"]["name"] == child_name(name, uid) == status["jobName"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["finetune-train", "--config", "/etc/finetune/config.yaml"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["memory"] == "48Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] == [78]
    # The example's model is not gated: no token Secret is referenced, so none must exist.
    assert not [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    # The restricted namespace admitted the Job's pod template (dry-run pod creation).
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "admission-check", "namespace": ftjs.namespace},
        "spec": pod,
    }
    ftjs.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(template))
    # The pod template holds the trainer config, and the operator made no other object.
    config = job["spec"]["template"]["metadata"]["annotations"]["finetune.dev/trainer-config"]
    assert "maxSteps: 20" in config
    configmaps = json.loads(ftjs.kubectl("get", "configmaps", "-o", "json").stdout)["items"]
    assert [c["metadata"]["name"] for c in configmaps] == ["kube-root-ca.crt"]
    assert status["observedGeneration"] == 1
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds == {
        "Ready": "False",
        "Reconciling": "False",
        "Stalled": "False",
        "Suspended": "True",
        "Complete": "False",
        "Failed": "False",
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"training": {"optimizer": "adam"}}, 'Unsupported value: "adam"'),
        (
            {"model": {"name": "a/b", "pvc": {"claimName": "models"}}},
            "set at most one of model.name, model.path, model.pvc and model.s3",
        ),
        (
            {"model": {"pvc": {"claimName": "models"}, "revision": "main"}},
            "model.revision is only used with model.name",
        ),
        (
            {"dataset": {"pvc": {"claimName": "d", "path": "t.jsonl"}, "configName": "en"}},
            "dataset.configName and dataset.revision are only used with dataset.name",
        ),
        (
            {"training": {"maxSteps": 5, "saveSteps": 10}},
            "training.saveSteps must not exceed training.maxSteps",
        ),
        (
            {"training": {"maxSteps": 3, "numEpochs": 1}},
            "set only one of training.maxSteps and training.numEpochs",
        ),
        (
            {"dataset": {"pvc": {"claimName": "d", "path": "../x"}}},
            "must not contain a '..' segment",
        ),
        ({"lora": {"rank": 0}}, "should be greater than or equal to 1"),
        (
            {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "a"}]}},
            "a toleration with operator Exists takes no value",
        ),
        (
            {"scheduling": {"tolerations": [{"key": "gpu", "tolerationSeconds": 5}]}},
            "tolerationSeconds applies only to effect NoExecute",
        ),
        (
            {"scheduling": {"tolerations": [{"value": "a"}]}},
            "a toleration without a key must use operator Exists",
        ),
        (
            {"output": {"s3": {"uri": "s3://b/p", "endpoint": "https://u:p@minio.example"}}},
            "must not carry credentials (user:password@host)",
        ),
        (
            {"output": {"s3": {"uri": "s3://bucket/runs/x/../a"}}},
            "must not contain a '.' or '..' segment; name the prefix without them",
        ),
        ({"output": {"path": "/data/out"}}, DURABLE_OUTPUT),
        ({"output": {}}, DURABLE_OUTPUT),
        ({"bogus": True}, 'unknown field "spec.bogus"'),
    ],
)
def test_invalid_manifests_are_rejected_at_admission(
    ftjs: FineTuneJobs, spec: dict, message: str
) -> None:
    result = ftjs.apply("bad", {**UNBOUND_OUTPUT, **spec}, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_a_finetunejob_without_output_storage_is_rejected_at_admission(
    ftjs: FineTuneJobs,
) -> None:
    # Checkpoints and the adapter would land on the pod's scratch volume and vanish with it.
    result = ftjs.apply("no-output", {"training": {"maxSteps": 5}}, check=False)
    assert result.returncode != 0
    assert DURABLE_OUTPUT in result.stderr, result.stderr
    assert "checkpoints and the adapter must outlive the trainer pod" in result.stderr


def test_a_finetunejob_from_before_the_output_rule_keeps_its_lifecycle_editable(
    ftjs: FineTuneJobs,
) -> None:
    # An operator upgrade brings the durable-output rule to a cluster that may hold
    # FineTuneJobs admitted without it. Their output can no longer change (immutable), so
    # the rule holds them to nothing: suspending or retrying one must still be allowed.
    current = yaml.safe_load(CRD.read_text())
    older = copy.deepcopy(current)
    spec_schema = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [
        rule
        for rule in spec_schema["x-kubernetes-validations"]
        if not rule["message"].startswith(DURABLE_OUTPUT)
    ]
    local_output = {"output": {"path": "/data/out"}, "lifecycle": {"suspend": True}}

    def install(crd: dict) -> None:
        ftjs.cluster.kubectl(
            ["apply", "--server-side", "--force-conflicts", "-f", "-"], input=yaml.safe_dump(crd)
        )

    def admitted(name: str) -> bool:
        return ftjs.apply(name, local_output, check=False).returncode == 0

    try:
        install(older)
        wait_for(lambda: admitted("older"), timeout=60, message="the older CRD to serve")
    finally:
        install(current)

    def refused_again() -> Any:
        # A server-side dry run: were one admitted while the change spreads, the next try
        # would be an update, which the rule allows.
        manifest = ftjs.manifest("newer", local_output)
        result = ftjs.kubectl("create", "--dry-run=server", "-f", "-", input=manifest, check=False)
        return result if result.returncode != 0 else None

    refused = wait_for(refused_again, timeout=60, message="the current CRD to refuse it again")
    assert DURABLE_OUTPUT in refused.stderr, refused.stderr
    ftjs.patch("older", {"spec": {"lifecycle": {"backoffLimit": 5, "suspend": False}}})
    assert ftjs.get("older")["spec"]["lifecycle"] == {"backoffLimit": 5, "suspend": False}
    moved = ftjs.patch("older", {"spec": {"output": {"path": "/data/elsewhere"}}}, check=False)
    assert moved.returncode != 0
    assert "spec.output is immutable once created" in moved.stderr, moved.stderr
    # It still gets no Job: its checkpoints would vanish with the pod.
    status = ftjs.wait_phase("older", "Failed")
    assert DURABLE_OUTPUT in status["message"], status
    assert "re-create the FineTuneJob with spec.output.pvc or spec.output.s3" in status["message"]
    assert ftjs.jobs("older") == []


def test_a_used_up_quota_holds_the_job_back_until_it_allows(ftjs: FineTuneJobs) -> None:
    # ResourceQuota admission refuses with 403, as it does a forbidden object; this one
    # clears on its own, so the FineTuneJob waits instead of failing for good.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "jobs", "namespace": ftjs.namespace},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    ftjs.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota))
    wait_for(
        lambda: ftjs.kubectl(
            "get", "resourcequota", "jobs", "-o", "jsonpath={.status.hard}"
        ).stdout.strip(),
        timeout=60,
        message="the quota controller to count the namespace",
    )
    ftjs.apply("held", SUSPENDED)
    status = ftjs.wait_status(
        "held", lambda s: s.get("reason") == "QuotaExceeded", what="held back by the quota"
    )
    assert status["phase"] == "Pending", status
    assert "exceeded quota: jobs" in status["message"], status
    assert ftjs.jobs("held") == []
    ftjs.kubectl("delete", "resourcequota", "jobs")
    ftjs.wait_phase("held", "Suspended")
    assert len(ftjs.jobs("held")) == 1
    reasons = ftjs.reasons("held", "QuotaExceeded", "JobCreated")
    assert reasons["QuotaExceeded"] == 1, reasons


def test_name_too_long_for_its_job_is_rejected(ftjs: FineTuneJobs) -> None:
    result = ftjs.apply("x" * 53, SUSPENDED, check=False)
    assert "at most 52 characters" in result.stderr


def test_training_part_is_immutable_but_lifecycle_is_not(ftjs: FineTuneJobs) -> None:
    ftjs.apply("immutable", SUSPENDED)
    result = ftjs.patch("immutable", {"spec": {"training": {"maxSteps": 40}}}, check=False)
    assert result.returncode != 0
    assert "spec.training is immutable once created; create a new FineTuneJob" in result.stderr
    added = ftjs.patch("immutable", {"spec": {"lora": {"rank": 4}}}, check=False)
    assert "spec.lora is immutable" in added.stderr
    ftjs.patch("immutable", {"spec": {"lifecycle": {"backoffLimit": 5}}})
    ftjs.wait_status(
        "immutable",
        lambda s: s.get("observedGeneration") == 2,
        what="the operator to see generation 2",
    )
    job = ftjs.jobs("immutable")[0]
    assert job["spec"]["backoffLimit"] == 5


def test_spec_only_the_full_schema_rejects_fails_with_the_fix(ftjs: FineTuneJobs) -> None:
    # The cross-field rules are CEL rules too (maxSteps with numEpochs is refused at
    # admission, above). An explicit null is what CEL lets through: maxSteps: null with no
    # numEpochs leaves nothing to stop at, which only the full schema sees. kubectl create
    # sends the null as written.
    manifest = ftjs.manifest("epochs", {"training": {"maxSteps": None}, **UNBOUND_OUTPUT})
    ftjs.kubectl("create", "-f", "-", input=manifest)
    status = ftjs.wait_phase("epochs", "Failed")
    assert status["reason"] == "InvalidSpec"
    assert "set training.maxSteps or training.numEpochs" in status["message"]
    assert ftjs.jobs("epochs") == []
    ftjs.reasons("epochs", "InvalidSpec")


def test_too_many_gpus_shows_the_schedulers_message(ftjs: FineTuneJobs) -> None:
    ftjs.apply("greedy", {"resources": {"gpus": 8}, **S3_OUTPUT})
    status = ftjs.wait_status(
        "greedy", lambda s: s.get("reason") == "Unschedulable", what="Unschedulable"
    )
    assert status["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in status["message"]
    reconciling = next(c for c in status["conditions"] if c["type"] == "Reconciling")
    assert reconciling["status"] == "True" and reconciling["reason"] == "Unschedulable"


def test_missing_pvc_is_named(ftjs: FineTuneJobs) -> None:
    """No Job, so no pod waits on the claim: the FineTuneJob says which field to fix."""
    ftjs.apply("nopvc", {"output": {"pvc": {"claimName": "does-not-exist"}}})
    status = ftjs.wait_status(
        "nopvc", lambda s: s.get("reason") == "ReferenceNotFound", what="ReferenceNotFound"
    )
    assert status["phase"] == "Pending"
    assert status["message"].startswith(
        "spec.output.pvc.claimName: PersistentVolumeClaim does-not-exist does not exist"
    ), status["message"]
    assert ftjs.jobs("nopvc") == []


def test_missing_secret_is_named(ftjs: FineTuneJobs) -> None:
    spec = {
        "model": {"name": "org/model", "tokenSecretRef": {"name": "absent", "key": "t"}},
        **S3_OUTPUT,
    }
    ftjs.apply("nosecret", spec)
    status = ftjs.wait_status(
        "nosecret",
        lambda s: s.get("reason") == "CreateContainerConfigError",
        what="CreateContainerConfigError",
    )
    assert 'secret "absent" not found' in status["message"]


def test_missing_dataset_config_map_is_named(ftjs: FineTuneJobs) -> None:
    # The kubelet (here the node agent) retries the volume mount and says why only in an
    # Event; the FineTuneJob names the ConfigMap and then the missing key.
    dataset = {"configMap": {"name": "chats", "key": "train.jsonl"}}
    ftjs.apply("nocm", {"dataset": dataset, **S3_OUTPUT})
    status = ftjs.wait_status(
        "nocm", lambda s: s.get("reason") == "DatasetConfigMapMissing", what="missing ConfigMap"
    )
    assert status["phase"] == "Pending"
    assert "ConfigMap chats does not exist" in status["message"]
    ftjs.kubectl("create", "configmap", "chats", "--from-literal=other.jsonl={}")
    status = ftjs.wait_status(
        "nocm", lambda s: "has no key train.jsonl" in (s.get("message") or ""), what="key"
    )
    assert "(its keys: other.jsonl)" in status["message"]


def test_unpullable_image(ftjs: FineTuneJobs) -> None:
    # The node agent stands in for a container runtime: images on *.invalid registries
    # fail to pull (see localcluster/README.md).
    ftjs.apply("noimage", {"image": "registry.invalid/finetune/trainer:0", **S3_OUTPUT})
    status = ftjs.wait_status(
        "noimage",
        lambda s: s.get("reason") in ("ErrImagePull", "ImagePullBackOff"),
        what="an image pull failure",
    )
    assert "registry.invalid" in status["message"]


def test_a_job_the_api_server_rejects_fails_with_its_message(ftjs: FineTuneJobs) -> None:
    # The affinity passes through unchecked; Job validation refuses an empty term list.
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    ftjs.apply("refused", {"scheduling": {"affinity": affinity}, **UNBOUND_OUTPUT})
    status = ftjs.wait_phase("refused", "Failed")
    assert status["reason"] == "JobRejected"
    assert "nodeSelectorTerms" in status["message"]
    assert ftjs.jobs("refused") == []
    ftjs.reasons("refused", "JobRejected")


def test_a_deleted_job_is_reported_not_recreated(ftjs: FineTuneJobs) -> None:
    ftjs.apply("orphaned", SUSPENDED)
    status = ftjs.wait_phase("orphaned", "Suspended")
    ftjs.kubectl("delete", "job", status["jobName"], "--wait=true")
    status = ftjs.wait_phase("orphaned", "Failed")
    assert status["reason"] == "JobDeleted"
    assert "re-create the FineTuneJob" in status["message"]
    assert ftjs.jobs("orphaned") == []
    # A later lifecycle edit is acknowledged without bringing the Job back.
    ftjs.patch("orphaned", {"spec": {"lifecycle": {"backoffLimit": 7}}})
    ftjs.wait_status("orphaned", lambda s: s.get("observedGeneration") == 2)
    assert ftjs.jobs("orphaned") == []


def test_image_and_service_account_outside_the_allowed_lists_are_refused(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    # As a platform would narrow them (policy.py), for this test only.
    operator.stop()
    operator.start(
        allowed_images=("registry.invalid/",), allowed_service_accounts=("trainer-allowed",)
    )
    try:
        ftjs.apply(
            "outsider",
            {"image": "evil.example/miner:1", "serviceAccountName": "admin", **UNBOUND_OUTPUT},
        )
        status = ftjs.wait_phase("outsider", "Failed")
        ftjs.apply("insider", {**SUSPENDED, "image": "registry.invalid/trainer:1"})
        ftjs.wait_phase("insider", "Suspended")
    finally:
        operator.restart()
    assert status["reason"] == "NotAllowed"
    assert "spec.image: evil.example/miner:1 is not allowed" in status["message"]
    assert "registry.invalid/" in status["message"]
    assert "spec.serviceAccountName: admin is not allowed" in status["message"]
    assert ftjs.jobs("outsider") == []
    ftjs.reasons("outsider", "NotAllowed")


def test_without_the_admission_policy_the_operator_refuses_what_it_would(
    ftjs: FineTuneJobs,
) -> None:
    # No ValidatingAdmissionPolicy is installed here: the operator's own check stands in.
    spec = {
        "output": {"s3": {"uri": "s3://bucket/p", "endpoint": "http://169.254.169.254/latest"}},
        "scheduling": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
        },
    }
    ftjs.apply("reaching", spec)
    status = ftjs.wait_phase("reaching", "Failed")
    assert status["reason"] == "NotAllowed"
    # (Here only the test S3 server's loopback address is listed.)
    assert (
        "spec.output.s3.endpoint: http://169.254.169.254/latest is not one of"
        in (status["message"])
    )
    assert "system-node-critical is reserved" in status["message"]
    assert "spec.scheduling.tolerations[0]: a toleration without a key" in status["message"]
    assert ftjs.jobs("reaching") == []


def test_suspend_and_resume_toggle_the_job(ftjs: FineTuneJobs) -> None:
    # More GPUs than any node has: once unsuspended, the pod stays Pending (a pod that
    # fits would run the trainer, and the Pending status could pass between two polls).
    ftjs.apply("toggle", {**SUSPENDED, "resources": {"gpus": 8}})
    ftjs.wait_phase("toggle", "Suspended")
    assert ftjs.jobs("toggle")[0]["spec"]["suspend"] is True
    uid = ftjs.get("toggle")["metadata"]["uid"]
    assert ftjs.pods(uid) == []
    # Unsuspend with a pod that can never be scheduled, so nothing trains.
    ftjs.patch("toggle", {"spec": {"lifecycle": {"suspend": False}}})
    status = ftjs.wait_status(
        "toggle",
        lambda s: s.get("reason") == "Unschedulable" and s.get("observedGeneration") == 2,
        what="unsuspended",
    )
    assert ftjs.jobs("toggle")[0]["spec"]["suspend"] is False
    assert status["phase"] == "Pending"
    ftjs.patch("toggle", {"spec": {"lifecycle": {"suspend": True}}})
    ftjs.wait_phase("toggle", "Suspended")
    # Suspended twice: one Event object, counted twice (as kubelet's repeats are).
    wait_for(
        lambda: (
            [e.get("count") for e in ftjs.events("toggle") if e["reason"] == "Suspended"] == [2]
        ),
        timeout=15,
        message="one Suspended Event counted twice",
    )


def test_deleting_the_finetunejob_collects_its_children(ftjs: FineTuneJobs, wait_for) -> None:
    ftjs.apply("doomed", {"resources": {"gpus": 8}, **S3_OUTPUT})  # a pending pod exists
    ftjs.wait_status("doomed", lambda s: s.get("reason") == "Unschedulable")
    uid = ftjs.get("doomed")["metadata"]["uid"]
    assert ftjs.pods(uid)
    ftjs.kubectl("delete", "finetunejob", "doomed", "--wait=true")
    wait_for(
        lambda: not ftjs.jobs_by_uid(uid) and not ftjs.pods(uid),
        timeout=60,
        message="the Job and pods to be garbage-collected",
    )


def test_deleted_finetunejobs_leave_nothing_in_the_operator(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    assert operator.running is not None
    runtime = operator.running.runtime
    names = [f"brief-{i}" for i in range(10)]
    spec = {"resources": {"gpus": 8}, **S3_OUTPUT}  # pods that never schedule
    ftjs.kubectl("apply", "-f", "-", input="---\n".join(ftjs.manifest(n, spec) for n in names))
    for name in names:
        ftjs.wait_status(name, lambda s: s.get("reason") == "Unschedulable")
    uids = {ftjs.get(name)["metadata"]["uid"] for name in names}
    ftjs.kubectl("delete", "finetunejobs", "--all", "--wait=true")

    def nothing_left() -> bool:
        namespace = ftjs.namespace
        with runtime.cache._lock:
            cached = [
                *[k for k in runtime.cache._finetunejobs if k[0] == namespace],
                *[k for k in runtime.cache._jobs if k[0] == namespace],
                *[
                    p
                    for p in runtime.cache._pods.values()
                    if p["metadata"]["namespace"] == namespace
                ],
                *[u for u in runtime.cache._pods_by_owner if u in uids],
            ]
        with runtime.queue._cond:
            queued = [
                k
                for table in (runtime.queue._worked, runtime.queue._failures, runtime.queue._due)
                for k in table
                if k[0] == namespace  # type: ignore[index]
            ]
        posted = [k for k in runtime.events._posted if k[0] in uids]
        return not cached and not queued and not posted and len(runtime.reconciler.progress) == 0

    wait_for(nothing_left, timeout=90, message="nothing kept about the deleted FineTuneJobs")


def test_restarted_operator_picks_up_without_duplicates(
    ftjs: FineTuneJobs, operator: OperatorHandle
) -> None:
    operator.stop()
    try:
        ftjs.apply("while-down", SUSPENDED)
        ftjs.apply("before", SUSPENDED)
    finally:
        operator.start()
    ftjs.wait_phase("while-down", "Suspended")
    ftjs.wait_phase("before", "Suspended")
    operator.restart()
    ftjs.patch("before", {"spec": {"lifecycle": {"backoffLimit": 9}}})
    ftjs.wait_status("before", lambda s: s.get("observedGeneration") == 2)
    assert len(ftjs.jobs("while-down")) == 1
    assert len(ftjs.jobs("before")) == 1


def test_operator_metrics_count_what_it_did(ftjs: FineTuneJobs, operator: OperatorHandle) -> None:
    registry = operator.metrics.registry
    before = registry.get_sample_value("finetune_operator_jobs_created_total") or 0
    ftjs.apply("counted", SUSPENDED)
    ftjs.wait_phase("counted", "Suspended")
    assert registry.get_sample_value("finetune_operator_jobs_created_total") == before + 1
    assert registry.get_sample_value("finetune_operator_reconciles_total", {"result": "ok"})
    assert registry.get_sample_value("finetune_operator_status_writes_total")
    suspended = registry.get_sample_value("finetune_operator_finetunejobs", {"phase": "Suspended"})
    assert suspended is not None and suspended >= 1
    assert registry.get_sample_value(
        "finetune_operator_events_total", {"type": "Normal", "reason": "Suspended"}
    )


def test_operator_writes_no_spec_and_no_finalizer(ftjs: FineTuneJobs) -> None:
    ftjs.apply("clean", SUSPENDED)
    ftjs.wait_phase("clean", "Suspended")
    body = json.loads(
        ftjs.kubectl("get", "finetunejob", "clean", "-o", "json", "--show-managed-fields").stdout
    )
    assert not body["metadata"].get("finalizers")
    managers = {m["manager"]: m for m in body["metadata"]["managedFields"]}
    assert any(m.get("subresource") == "status" for m in managers.values()), managers
    for manager, entry in managers.items():
        if manager != "kubectl-client-side-apply" and entry.get("subresource") != "status":
            fields = json.dumps(entry.get("fieldsV1", {}))
            assert '"f:spec"' not in fields, f"{manager} wrote spec"


def test_what_a_broken_watch_missed_is_caught_by_the_resync(
    ftjs: FineTuneJobs, operator: OperatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch that reconnects lists again, and a listing carries no deletions: here the
    cache is made to miss a Job's and a FineTuneJob's DELETED events, as it would during
    an outage; the periodic listing finds both gone."""
    assert operator.running is not None
    runtime = operator.running.runtime
    ftjs.apply("lost-job", SUSPENDED)
    ftjs.apply("lost-ftj", SUSPENDED)
    job_name = ftjs.wait_phase("lost-job", "Suspended")["jobName"]
    ftjs.wait_phase("lost-ftj", "Suspended")
    lost: list[str] = []
    with monkeypatch.context() as outage:
        outage.setattr(runtime.cache, "remove", lambda body: lost.append(body["metadata"]["name"]))
        ftjs.kubectl("delete", "job", job_name, "--wait=true")
        ftjs.kubectl("delete", "finetunejob", "lost-ftj", "--wait=true")
        wait_for(
            lambda: {job_name, "lost-ftj"} <= set(lost),
            timeout=30,
            message="the DELETED events to arrive (and be lost)",
        )
    assert runtime.cache.job(ftjs.namespace, job_name) is not None
    assert runtime.cache.finetunejob(ftjs.namespace, "lost-ftj") is not None

    found = runtime.resync.once()

    assert found["Job"] >= 1 and found["FineTuneJob"] >= 1
    assert runtime.cache.job(ftjs.namespace, job_name) is None
    assert runtime.cache.finetunejob(ftjs.namespace, "lost-ftj") is None
    # The FineTuneJob whose Job went is told, as the DELETED event would have told it.
    status = ftjs.wait_phase("lost-job", "Failed")
    assert status["reason"] == "JobDeleted"
