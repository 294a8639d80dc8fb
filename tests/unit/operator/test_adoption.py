"""Which existing objects may be taken as a FineTuneJob's children."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from finetune_api.spec import LifecycleSpec
from finetune_operator.adoption import (
    FOLLOWS_LIFECYCLE,
    SERVER_DEFAULTS,
    adoption_problem,
    difference,
    generated_selector,
)
from finetune_operator.builders import build_job
from finetune_operator.builders.job import lifecycle_patch

from .conftest import UID, spec_of

JOB_UID = "7a0da080-9c9d-4aae-9442-d15417996b7d"


def stored(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` as the API server (v1.36) returns it after creating it: every change it
    made to the Job the operator builds, as observed, and no other."""
    live = copy.deepcopy(job)
    meta, spec = live["metadata"], live["spec"]
    meta.update(uid=JOB_UID, resourceVersion="250", generation=1, creationTimestamp="T0")
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("suspend", False)
    spec.update(
        completionMode="NonIndexed", manualSelector=False, selector=generated_selector(JOB_UID)
    )
    for rule in spec["podFailurePolicy"]["rules"]:
        for condition in rule.get("onPodConditions", []):
            condition["status"] = "True"
    template = spec["template"]
    template["metadata"]["labels"].update(
        {
            "batch.kubernetes.io/controller-uid": JOB_UID,
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": JOB_UID,
            "job-name": meta["name"],
        }
    )
    pod = template["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    for key in [k for k, v in pod.items() if v == []]:
        del pod[key]  # an empty list is stored as none
    for container in pod["containers"]:
        for port in container["ports"]:
            port["protocol"] = "TCP"
        for var in container["env"]:
            if "fieldRef" in var.get("valueFrom", {}):
                var["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
        for mount in container["volumeMounts"]:
            if mount.get("readOnly") is False:
                del mount["readOnly"]
        requests = container["resources"].get("requests", {})
        if requests.get("cpu") == "0.5":
            requests["cpu"] = "500m"
    for volume in pod["volumes"]:
        if "downwardAPI" in volume:
            volume["downwardAPI"]["defaultMode"] = 420
            for item in volume["downwardAPI"]["items"]:
                item["fieldRef"]["apiVersion"] = "v1"
        claim = volume.get("persistentVolumeClaim", {})
        if claim.get("readOnly") is False:
            del claim["readOnly"]
    live["status"] = {}
    return live


SPECS = {
    "s3 output": {"output": {"s3": {"uri": "s3://out/x", "credentialsSecretRef": {"name": "c"}}}},
    "claim output, half a CPU": {
        "output": {"pvc": {"claimName": "outputs"}},
        "resources": {"cpu": "0.5", "memory": "1Gi"},
    },
    "queued, no GPU": {"resources": {"gpus": 0}, "scheduling": {"queueName": "q"}},
}


@pytest.mark.parametrize("data", SPECS.values(), ids=SPECS.keys())
def test_the_operators_own_job_is_adopted_as_the_api_server_stores_it(
    data: dict[str, Any], owner: Any, settings: Any
) -> None:
    desired = build_job(spec_of(data), owner, settings)
    assert adoption_problem(desired, stored(desired), UID) is None


def test_lifecycle_fields_are_those_the_reconciler_sets() -> None:
    fields = lifecycle_patch(LifecycleSpec(), queued=False, outcome_recorded=True)
    assert set(fields) == FOLLOWS_LIFECYCLE


def test_canonical_quantities_are_no_difference() -> None:
    desired = {"requests": {"cpu": "0.5", "memory": "1Gi"}}
    live = {"requests": {"cpu": "500m", "memory": "1073741824"}}
    where = ("spec", "template", "spec", "containers", None, "resources")
    assert difference(desired, live, where=where) is None
    more = {"requests": {"cpu": "500m", "memory": "1073741825"}}
    assert difference(desired, more, where=where) == ".requests.memory differs"
    assert difference(desired, {"requests": {"cpu": "0.5", "memory": "1G"}}, where=where)


def test_quantities_are_compared_as_amounts_only_where_they_are_quantities() -> None:
    # Elsewhere "1Gi" and "1073741824" are two different strings (an env value, an arg).
    assert difference({"value": "1Gi"}, {"value": "1073741824"}) == ".value differs"
    assert difference({"value": "0.5"}, {"value": "500m"}) == ".value differs"


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "sNaN", "1x", ""])
def test_a_quantity_that_is_no_amount_is_a_difference(amount: str) -> None:
    where = ("spec", "template", "spec", "volumes", None, "emptyDir")
    assert difference({"sizeLimit": "8Gi"}, {"sizeLimit": amount}, where=where)
    assert difference({"sizeLimit": amount}, {"sizeLimit": "8Gi"}, where=where)


def test_anything_else_added_is_a_difference() -> None:
    desired = {"containers": [{"name": "t"}], "volumes": [{"name": "v"}]}
    assert difference(desired, {**desired, "hostNetwork": True}) == (
        ".hostNetwork is not one the operator sets"
    )
    assert difference(desired, {**desired, "initContainers": [{"name": "x"}]}) is not None
    assert difference(desired, {**desired, "volumes": [{"name": "v"}, {"name": "host"}]}) == (
        ".volumes has other entries"
    )
    changed = {"containers": [{"name": "t", "envFrom": [{"secretRef": {"name": "db"}}]}]}
    assert difference(desired, {**changed, "volumes": [{"name": "v"}]}) is not None


def test_labels_may_gain_entries_in_the_pod_template_only() -> None:
    where = ("spec", "template")
    desired = {"metadata": {"labels": {"a": "1"}}}
    labelled = {"metadata": {"labels": {"a": "1", "job-name": "x"}}}
    assert difference(desired, labelled, where=where) is None
    changed = {"metadata": {"labels": {"a": "2"}}}
    assert difference(desired, changed, where=where) == ".metadata.labels.a differs"
    # Anywhere else a map named "labels" is compared like any other.
    assert difference(desired, labelled) == ".metadata.labels.job-name is not one the operator sets"


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def trainer_of(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_of(job)["containers"][0]
    return container


PLANTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # A default's name, at a place the API server never writes it.
    "scheduler name on the container": (
        lambda job: trainer_of(job).update(schedulerName="default-scheduler"),
        "containers[0].schedulerName is not one the operator sets",
    ),
    "dnsPolicy in the Job spec": (
        lambda job: job["spec"].update(dnsPolicy="ClusterFirst"),
        "spec.dnsPolicy is not one the operator sets",
    ),
    "a condition status on an exit-code rule": (
        lambda job: job["spec"]["podFailurePolicy"]["rules"][1].update(status="True"),
        "spec.podFailurePolicy.rules[1].status is not one the operator sets",
    ),
    "defaultMode on the scratch volume": (
        lambda job: pod_of(job)["volumes"][1]["emptyDir"].update(defaultMode=420),
        "volumes[1].emptyDir.defaultMode is not one the operator sets",
    ),
    # A default's place, with a value the API server never writes.
    "another scheduler": (
        lambda job: pod_of(job).update(schedulerName="tenant-scheduler"),
        "spec.template.spec.schedulerName is not what the API server sets there",
    ),
    "the node's DNS": (
        lambda job: pod_of(job).update(dnsPolicy="Default"),
        "spec.template.spec.dnsPolicy is not what the API server sets there",
    ),
    "indexed completions": (
        lambda job: job["spec"].update(completionMode="Indexed"),
        "spec.completionMode is not what the API server sets there",
    ),
    # Job fields that decide which pods it counts and who runs it.
    "another controller": (
        lambda job: job["spec"].update(managedBy="example.com/tenant-controller"),
        "spec.managedBy is not one the operator sets",
    ),
    "the built-in controller, named": (
        lambda job: job["spec"].update(managedBy="kubernetes.io/job-controller"),
        "spec.managedBy is not one the operator sets",
    ),
    "a manual selector": (
        lambda job: job["spec"].update(
            manualSelector=True, selector={"matchLabels": {"app": "victim"}}
        ),
        "spec.manualSelector is not what the API server sets there",
    ),
    "a selector of other pods": (
        lambda job: job["spec"].update(selector={"matchLabels": {"app": "victim"}}),
        "spec.selector is not what the API server sets there",
    ),
    "a selector of another Job's pods": (
        lambda job: job["spec"].update(selector=generated_selector("another-uid")),
        "spec.selector is not what the API server sets there",
    ),
    "a selector with more terms": (
        lambda job: job["spec"]["selector"].update(
            matchExpressions=[{"key": "app", "operator": "Exists"}]
        ),
        "spec.selector is not what the API server sets there",
    ),
    "a success policy": (
        lambda job: job["spec"].update(successPolicy={"rules": []}),
        "spec.successPolicy is not one the operator sets",
    ),
    # What the operator sets, the other way.
    "a read-only output claim": (
        lambda job: pod_of(job)["volumes"][4]["persistentVolumeClaim"].update(readOnly=True),
        "volumes[4].persistentVolumeClaim.readOnly differs",
    ),
    "the API token mounted": (
        lambda job: pod_of(job).pop("automountServiceAccountToken"),
        "spec.template.spec.automountServiceAccountToken is missing",
    ),
    "a bigger memory limit": (
        lambda job: trainer_of(job)["resources"]["limits"].update(memory="2Gi"),
        "resources.limits.memory differs",
    ),
    "the same memory limit, spelt in bytes": (
        lambda job: trainer_of(job)["resources"]["limits"].update(memory="1073741824"),
        "",
    ),
}


@pytest.mark.parametrize("change, problem", PLANTED.values(), ids=PLANTED.keys())
def test_a_planted_job_is_not_adopted(
    change: Callable[[dict[str, Any]], None], problem: str, owner: Any, settings: Any
) -> None:
    desired = build_job(spec_of(SPECS["claim output, half a CPU"]), owner, settings)
    live = stored(desired)
    change(live)
    found = adoption_problem(desired, live, UID)
    if problem:
        assert found is not None and found.endswith(problem), found
    else:
        assert found is None


def test_server_defaults_name_only_fields_of_a_job() -> None:
    # Each place is under the Job's spec, so a default never excuses a field elsewhere.
    assert all(where[0] == "spec" for where in SERVER_DEFAULTS)


def test_a_job_is_adopted_only_when_it_runs_what_the_operator_would(
    owner: Any, settings: Any
) -> None:
    desired = build_job(spec_of({}), owner, settings)
    live = stored(desired)
    live["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/podset"] = "main"
    live["spec"]["suspend"] = True  # lifecycle fields follow the spec: no reason to refuse
    live["spec"]["backoffLimit"] = 100
    assert adoption_problem(desired, live, UID) is None
    other_image = copy.deepcopy(live)
    other_image["spec"]["template"]["spec"]["containers"][0]["image"] = "attacker/img:1"
    assert "image differs" in (adoption_problem(desired, other_image, UID) or "")
    other_config = copy.deepcopy(live)
    other_config["metadata"]["annotations"]["finetune.dev/config-hash"] = "0" * 16
    assert "config hash" in (adoption_problem(desired, other_config, UID) or "")
    # The planter copies the hash but not the config: the config rides in the template.
    planted = copy.deepcopy(live)
    annotations = planted["spec"]["template"]["metadata"]["annotations"]
    annotations["finetune.dev/trainer-config"] += "output: {s3: {uri: s3://attacker/x}}\n"
    assert "trainer-config differs" in (adoption_problem(desired, planted, UID) or "")
    stranger = copy.deepcopy(live)
    stranger["metadata"]["ownerReferences"][0]["controller"] = False
    assert adoption_problem(desired, stranger, UID) == "it is not controlled by this FineTuneJob"
    other_account = copy.deepcopy(live)
    other_account["spec"]["template"]["spec"]["serviceAccountName"] = "admin"
    assert adoption_problem(desired, other_account, UID) is not None


def test_a_selector_is_taken_only_with_the_jobs_own_uid(owner: Any, settings: Any) -> None:
    desired = build_job(spec_of({}), owner, settings)
    live = stored(desired)
    del live["metadata"]["uid"]  # nothing to check the selector against
    assert adoption_problem(desired, live, UID) == "spec.selector is not one the operator sets"
    del live["spec"]["selector"]
    assert adoption_problem(desired, live, UID) is None
