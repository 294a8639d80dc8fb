"""Which existing objects may be taken as a FineTuneJob's children."""

from __future__ import annotations

import copy
from typing import Any

from finetune_operator.adoption import adoption_problem, difference
from finetune_operator.builders import build_job

from .conftest import UID, spec_of


def test_server_defaults_and_canonical_quantities_are_no_difference() -> None:
    desired = {"containers": [{"name": "t", "resources": {"requests": {"cpu": "0.5"}}}]}
    live = {
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "containers": [{"name": "t", "resources": {"requests": {"cpu": "500m"}}}],
    }
    assert difference(desired, live) is None


def test_anything_else_added_is_a_difference() -> None:
    desired = {"containers": [{"name": "t"}], "volumes": []}
    assert difference(desired, {**desired, "hostNetwork": True}) == (
        ".hostNetwork is not one the operator sets"
    )
    assert difference(desired, {**desired, "initContainers": [{"name": "x"}]}) is not None
    assert difference(desired, {**desired, "volumes": [{"name": "host"}]}) == (
        ".volumes has other entries"
    )
    changed = {"containers": [{"name": "t", "envFrom": [{"secretRef": {"name": "db"}}]}]}
    assert difference(desired, {**changed, "volumes": []}) is not None


def test_labels_may_gain_entries() -> None:
    desired = {"metadata": {"labels": {"a": "1"}}}
    assert difference(desired, {"metadata": {"labels": {"a": "1", "job-name": "x"}}}) is None
    assert difference(desired, {"metadata": {"labels": {"a": "2"}}}) == ".metadata.labels.a differs"


def test_a_job_is_adopted_only_when_it_runs_what_the_operator_would(
    owner: Any, settings: Any
) -> None:
    desired = build_job(spec_of({}), owner, settings)
    live = copy.deepcopy(desired)
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] = "x"
    live["spec"]["suspend"] = True  # lifecycle fields follow the spec: no reason to refuse
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
