"""values.schema.json from the annotated values.yaml."""

from __future__ import annotations

from typing import Any

from annotated_values import Setting

JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"


def _inferred_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    raise TypeError(f"unsupported default {value!r}")


def setting_schema(setting: Setting) -> dict[str, Any]:
    """The JSON schema of one setting: inferred, then the ``@schema`` annotation on top."""
    schema: dict[str, Any] = {}
    if setting.description:
        schema["description"] = setting.description
    if setting.is_group:
        schema["type"] = "object"
        schema["additionalProperties"] = False
        schema["properties"] = {c.path[-1]: setting_schema(c) for c in setting.children}
    else:
        schema["type"] = _inferred_type(setting.default)
        schema["default"] = setting.default
    schema.update(setting.schema)
    return schema


def values_schema(settings: list[Setting]) -> dict[str, Any]:
    """The chart's whole values.schema.json."""
    properties = {s.path[-1]: setting_schema(s) for s in settings}
    # Helm passes `global` to every chart, including this one used as a subchart.
    properties["global"] = {
        "type": "object",
        "description": "Helm's global values (not used by this chart).",
    }
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": "Values of the finetune-operator chart",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
