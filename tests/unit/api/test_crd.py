"""The generated CRD: committed copy is fresh, and the schema is structural and documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_api.config.base import (
    MAX_K8S_NAME,
    MAX_LOCAL_PATH,
    MAX_RELATIVE_PATH,
    MAX_S3_URI,
)
from finetune_api.crd import build_crd, render
from finetune_api.spec import DURABLE_OUTPUT_MESSAGE

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "finetunejobs.yaml"


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_PATH.read_text() == render(), (
        "crds/finetunejobs.yaml is stale: run `make crds` and commit the result"
    )


def test_names_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "finetunejobs.finetune.dev"
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in ("Phase", "Progress", "Loss", "Age"):
        assert name in columns and columns[name].get("priority", 0) == 0
    assert columns["Job"]["priority"] == 1
    # The rounded string, not the float (a number column prints every digit).
    assert columns["Loss"] == {
        "name": "Loss",
        "type": "string",
        "jsonPath": ".status.progress.lossDisplay",
    }


def test_schema_is_structural(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(root)
    for forbidden in (
        "$ref",
        "anyOf",
        "allOf",
        "oneOf",
        "$defs",
        "title",
        "default:",
        "patternProperties",
    ):
        assert forbidden not in text, forbidden
    for path, node in walk(root):
        assert "type" in node, f"{path} has no type"
        # metadata is the API server's own schema; CRDs declare only its type.
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), path


def test_every_spec_and_status_field_is_described(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in walk(root["properties"][part], part):
            if path.endswith("[]") or path.endswith("{}"):
                continue
            assert node.get("description"), f"{path} has no description"


def test_strings_and_lists_are_bounded(spec_schema: dict[str, Any]) -> None:
    for path, node in walk(spec_schema, "spec"):
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path} has no maxLength"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} has no maxItems"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path} has no maxProperties"


def test_training_part_is_immutable(spec_schema: dict[str, Any]) -> None:
    # Transition rules (oldSelf without optionalOldSelf run on updates only).
    rules = [
        r
        for r in spec_schema["x-kubernetes-validations"]
        if "oldSelf" in r["rule"] and not r.get("optionalOldSelf")
    ]
    covered = {r["rule"].split("(")[1].split(")")[0] for r in rules}
    for field in ("self.model", "self.dataset", "self.lora", "self.training", "self.output"):
        assert field in covered
    assert "self.lifecycle" not in covered
    assert all("create a new FineTuneJob" in r["message"] for r in rules)


def test_cross_field_rules_present(spec_schema: dict[str, Any]) -> None:
    model_rules = spec_schema["properties"]["model"]["x-kubernetes-validations"]
    assert any("size() <= 1" in r["rule"] for r in model_rules)
    training_rules = spec_schema["properties"]["training"]["x-kubernetes-validations"]
    assert any("saveSteps" in r["rule"] for r in training_rules)


def rules_of(node: dict[str, Any]) -> dict[str, str]:
    return {r["message"]: r["rule"] for r in node.get("x-kubernetes-validations") or []}


def test_a_finetunejob_must_name_pvc_or_s3_output(spec_schema: dict[str, Any]) -> None:
    (rule,) = (
        r for r in spec_schema["x-kubernetes-validations"] if r["message"] == DURABLE_OUTPUT_MESSAGE
    )
    assert rule == {
        "rule": "oldSelf.hasValue() || "
        "has(self.output) && (has(self.output.pvc) || has(self.output.s3))",
        "message": DURABLE_OUTPUT_MESSAGE,
        "optionalOldSelf": True,  # create only: see the e2e test of an older FineTuneJob
    }


def test_every_cross_field_check_is_also_a_cel_rule(spec_schema: dict[str, Any]) -> None:
    """Each pydantic cross-field check has an admission rule with the same message, so a
    spec that would fail later as InvalidSpec (with its training part immutable by then) is
    refused when it is applied."""
    props = spec_schema["properties"]
    assert "set only one of training.maxSteps and training.numEpochs" in rules_of(props["training"])
    assert "model.revision is only used with model.name (a Hub download)" in rules_of(
        props["model"]
    )
    assert "dataset.configName and dataset.revision are only used with dataset.name" in (
        rules_of(props["dataset"])
    )
    toleration = props["scheduling"]["properties"]["tolerations"]["items"]
    assert set(rules_of(toleration)) == {
        "a toleration with operator Exists takes no value; remove value",
        "tolerationSeconds applies only to effect NoExecute; set that effect",
        "a toleration without a key must use operator Exists",
    }


def test_s3_endpoints_refuse_credentials(spec_schema: dict[str, Any]) -> None:
    for section in ("model", "dataset", "output"):
        endpoint = spec_schema["properties"][section]["properties"]["s3"]["properties"]["endpoint"]
        rule = next(r for m, r in rules_of(endpoint).items() if "credentials" in m)
        # The CEL rule uses the same RE2-compatible pattern the validator does.
        pattern = rule.removeprefix("!self.matches('").removesuffix("')")
        assert re.match(pattern, "https://key:secret@minio:9000")
        assert not re.match(pattern, "https://minio:9000/tenant@a")


def test_s3_uris_refuse_dot_segments(spec_schema: dict[str, Any]) -> None:
    """The validator's rule at admission too: a '..' in output.s3.uri would reach outside
    the trainer's staging directory."""
    for section in ("model", "dataset", "output"):
        uri = spec_schema["properties"][section]["properties"]["s3"]["properties"]["uri"]
        (message,) = (m for m in rules_of(uri) if "'.' or '..' segment" in m)
        assert rules_of(uri)[message] == "self.split('/').all(s, s != '.' && s != '..')"
        assert message.startswith("must not contain a '.' or '..' segment; name the prefix")


def test_status_uris_fit_every_location_the_spec_allows(version: dict[str, Any]) -> None:
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    limits = [
        status["checkpoint"]["properties"]["uri"]["maxLength"],
        status["output"]["properties"]["adapterUri"]["maxLength"],
        status["output"]["properties"]["mergedUri"]["maxLength"],
    ]
    pvc_uri = len("pvc://") + MAX_K8S_NAME + 1 + MAX_RELATIVE_PATH
    longest = max(MAX_LOCAL_PATH, MAX_S3_URI, pvc_uri) + len("/checkpoint-10000000/final_model")
    assert all(limit >= longest for limit in limits), limits


NUL_RULE = {"rule": "!self.contains('\\u0000')", "message": "must not contain a NUL character"}


def _admits_nul(node: dict[str, Any]) -> bool:
    """Whether a string node's pattern (if any) could match a NUL: no pattern, '.', a
    negated class or escape (\\S, [^/]); positive classes such as [a-z0-9._-] never do."""
    pattern = node.get("pattern")
    if pattern is None:
        return True
    outside = re.sub(r"\[(?!\^)(?:\\.|[^\]])*\]", "", pattern.replace("\\.", ""))
    return "." in outside or "[^" in outside or re.search(r"\\[SWD]", outside) is not None


def test_every_free_form_string_refuses_a_nul(spec_schema: dict[str, Any]) -> None:
    """Paths, URIs and names: a NUL would reach file names, S3 keys and the C library."""
    checked = []
    for path, node in walk(spec_schema, "spec"):
        if node.get("type") != "string" or "enum" in node or not _admits_nul(node):
            continue
        assert NUL_RULE in (node.get("x-kubernetes-validations") or []), path
        checked.append(path)
    for expected in (
        "spec.model.path",
        "spec.dataset.path",
        "spec.output.path",
        "spec.dataset.pvc.path",
        "spec.output.s3.uri",
        "spec.model.s3.endpoint",
        "spec.dataset.revision",
        "spec.image",
    ):
        assert expected in checked
    # The rule's text holds the escape, never the character itself.
    assert "\x00" not in yaml.safe_dump(spec_schema)
