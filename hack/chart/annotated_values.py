"""Read a Helm values.yaml whose comments document and constrain every key.

Conventions, in the comment block right above a key (same indentation):

    # -- What the key does; the text may go on over several comment lines.
    # @schema {"enum": ["a", "b"]}   JSON merged over the JSON schema inferred from the default
    # @raw                           a free-form value (Kubernetes fields): not descended into

A mapping without ``@raw`` is a group of chart settings: its children are documented one by
one and its schema rejects unknown keys, so a typo in a user's values fails at install time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ValuesDocError(ValueError):
    """values.yaml breaks the documentation conventions."""


@dataclass
class Setting:
    """One key of values.yaml with its documentation."""

    path: tuple[str, ...]
    default: Any
    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    raw: bool = False
    children: list[Setting] = field(default_factory=list)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def is_group(self) -> bool:
        """A mapping of documented settings (as opposed to a leaf or a free-form value)."""
        return isinstance(self.default, dict) and bool(self.default) and not self.raw

    def leaves(self) -> list[Setting]:
        """Every documented leaf under this setting, in file order."""
        if not self.is_group:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


def _comment_block(lines: list[str], key_line: int) -> list[str]:
    """The comment lines directly above ``key_line`` at the key's indentation."""
    indent = len(lines[key_line]) - len(lines[key_line].lstrip())
    block: list[str] = []
    index = key_line - 1
    while index >= 0:
        text = lines[index]
        stripped = text.strip()
        if not stripped.startswith("#") or len(text) - len(text.lstrip()) != indent:
            break
        block.insert(0, stripped[1:].removeprefix(" "))
        index -= 1
    return block


def _parse_block(block: list[str], where: str) -> tuple[str, dict[str, Any], bool]:
    """(description, schema annotation, raw?) from a key's comment block."""
    description: list[str] = []
    schema: dict[str, Any] = {}
    raw = False
    in_description = False
    for line in block:
        if line.startswith("-- "):
            in_description = True
            description = [line[3:].strip()]
        elif line.startswith("@schema "):
            in_description = False
            try:
                schema.update(json.loads(line[len("@schema ") :]))
            except json.JSONDecodeError as exc:
                raise ValuesDocError(f"{where}: bad @schema JSON: {exc}") from exc
        elif line.strip() == "@raw":
            in_description = False
            raw = True
        elif line.startswith("@"):
            raise ValuesDocError(f"{where}: unknown directive {line.split()[0]!r}")
        elif in_description:
            description.append(line.strip())
    return " ".join(part for part in description if part), schema, raw


def _build(
    node: yaml.MappingNode, data: dict[str, Any], lines: list[str], prefix: tuple[str, ...]
) -> list[Setting]:
    settings = []
    for key_node, value_node in node.value:
        key = key_node.value
        path = (*prefix, key)
        where = ".".join(path)
        description, schema, raw = _parse_block(
            _comment_block(lines, key_node.start_mark.line), where
        )
        setting = Setting(path, data[key], description, schema, raw)
        if setting.is_group:
            if not isinstance(value_node, yaml.MappingNode):
                raise ValuesDocError(f"{where}: expected a mapping")
            setting.children = _build(value_node, data[key], lines, path)
        elif not description:
            raise ValuesDocError(f"{where}: undocumented (add a '# -- ' comment above it)")
        settings.append(setting)
    return settings


def load(values_file: Path) -> list[Setting]:
    """The top-level settings of ``values_file``, documentation attached."""
    text = values_file.read_text()
    root = yaml.compose(text)
    data = yaml.safe_load(text)
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise ValuesDocError(f"{values_file}: the top level must be a mapping")
    return _build(root, data, text.splitlines(), ())
