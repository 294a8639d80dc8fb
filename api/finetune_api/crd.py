"""Generate the FineTuneJob CustomResourceDefinition from the typed spec and status.

    python -m finetune_api.crd > crds/finetunejobs.yaml

pydantic's JSON Schema is turned into a Kubernetes structural schema: ``$ref`` inlined,
``anyOf [X, null]`` made ``nullable``, titles and defaults dropped (defaults are applied by
the operator, so the stored object stays what the user wrote and GitOps sees no drift),
``exclusiveMinimum`` made OpenAPI 3.0 style, and CEL rules added for immutability.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from . import API_VERSION, CATEGORIES, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from .spec import IMMUTABLE_FIELDS, FineTuneJobSpec
from .status import FineTuneJobStatus

_DROP = {
    "title",
    "default",
    "additionalProperties",
    "propertyNames",
    "patternProperties",
    "examples",
}


class _Structural:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {})

    def convert(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(self.defs[node["$ref"].rsplit("/", 1)[-1]])
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return self.convert(merged)
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            nullable = len(options) < len(node["anyOf"])
            if len(options) != 1:
                raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**self.convert(options[0]), **self.convert(rest)}
            if nullable:
                merged["nullable"] = True
            return merged
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key == "$defs":
                continue
            if key == "properties":
                out[key] = {name: self.convert(sub) for name, sub in value.items()}
            elif key == "items":
                out[key] = self.convert(value)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[bound] = value
                out[key] = True
            else:
                out[key] = value
        if isinstance(node.get("additionalProperties"), dict):
            # A map: structural schemas allow additionalProperties without properties.
            out["additionalProperties"] = self.convert(node["additionalProperties"])
            if "maxProperties" not in out and "maxItems" in out:
                out["maxProperties"] = out.pop("maxItems")
        if (
            out.get("type") == "object"
            and "properties" not in out
            and "additionalProperties" not in out
        ):
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        if out.get("type") == "integer":
            out.setdefault("format", "int64")
        return out


def structural_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _Structural(raw).convert(raw)
    return schema


def _immutability_rules() -> list[dict[str, str]]:
    rules = []
    for field in IMMUTABLE_FIELDS:
        rules.append(
            {
                "rule": f"has(self.{field}) == has(oldSelf.{field}) && "
                f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
                "message": f"spec.{field} is immutable once created; create a new FineTuneJob "
                "to change it (only spec.lifecycle can change)",
            }
        )
    return rules


def _dict_key_limits(spec: dict[str, Any]) -> None:
    """pydantic writes a dict's max_length as maxProperties already; nothing else to do, but
    keep maps bounded for CEL cost estimation."""
    selector = spec["properties"]["scheduling"]["properties"]["nodeSelector"]
    selector.setdefault("maxProperties", 64)


def build_crd() -> dict[str, Any]:
    spec = structural_schema(FineTuneJobSpec)
    # The spec's own rules (from the model) first, then immutability (transition rules).
    spec["x-kubernetes-validations"] = [
        *spec.get("x-kubernetes-validations", []),
        *_immutability_rules(),
    ]
    _dict_key_limits(spec)
    status = structural_schema(FineTuneJobStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A FineTuneJob fine-tunes a causal language model "
                            "(gpt-oss-20b by default) with LoRA on one GPU node, writing "
                            "checkpoints and the adapter to a PVC or S3.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "x-kubernetes-validations": [
                                {
                                    "rule": "self.metadata.name.size() <= 52",
                                    "message": "metadata.name must be at most 52 characters "
                                    "(the Job name adds a suffix and must fit 63)",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        # A string the operator rounds (status.loss_display): a number column would print
        # every digit of the float.
        {"name": "Loss", "type": "string", "jsonPath": ".status.progress.lossDisplay"},
        {"name": "Eval Loss", "type": "string", "jsonPath": ".status.progress.evalLossDisplay"},
        {
            "name": "ETA",
            "type": "string",
            "jsonPath": ".status.progress.eta",
            "description": "Estimated time to the last step (3h34m).",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts", "priority": 1},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
    ]


HEADER = (
    "# Generated by `python -m finetune_api.crd` from the typed spec in api/finetune_api/.\n"
    "# Do not edit; run `make crds` after changing the schema (CI fails when this file is\n"
    "# stale).\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

__all__ = ["API_VERSION", "build_crd", "render"]
