"""The RBAC the operator needs, read from its source: every Kubernetes client call in
kube.py and every watch kopf opens for handlers.py. The chart's role must be exactly this."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import finetune_api as api
import finetune_operator
from finetune_operator.builders.owner import Owner

OPERATOR = Path(finetune_operator.__file__).resolve().parent
Rules = dict[tuple[str, str], set[str]]  # (apiGroup, resource) -> verbs

# The client's API attribute in Kube -> its API group (custom objects carry their own).
_API_GROUPS = {"core": "", "batch": "batch"}
_VERBS = {
    "create": "create",
    "read": "get",
    "get": "get",
    "list": "list",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
}
_PLURALS = {
    "job": "jobs",
    "config_map": "configmaps",
    "persistent_volume_claim": "persistentvolumeclaims",
    "pod": "pods",
    "event": "events",
}
_TYPED = re.compile(
    r"^(?P<verb>[a-z]+)_(namespaced_(?P<kind>[a-z_]+?)(?P<status>_status)?"
    r"|(?P<everywhere>[a-z_]+?)_for_all_namespaces)$"
)
_CUSTOM = re.compile(r"^(?P<verb>[a-z]+)_(namespaced|cluster)_custom_object(?P<status>_status)?$")


def _add(rules: Rules, group: str, resource: str, verb: str) -> None:
    rules.setdefault((group, resource), set()).add(verb)


def client_calls(source: str) -> list[tuple[str, str]]:
    """(api attribute, method) of every ``self.<api>.<method>(...)`` call."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if (
            isinstance(owner, ast.Attribute)
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "self"
            and owner.attr in (*_API_GROUPS, "custom")
        ):
            calls.append((owner.attr, node.func.attr))
    return calls


def _constant(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.Name):
        return str(getattr(api, node.id))
    raise ValueError(f"cannot resolve {ast.dump(node)}")


def kopf_watches(source: str) -> list[tuple[str, str]]:
    """(group, plural) of every ``@kopf.on.event(group, version, plural, ...)`` and
    ``@kopf.index(...)`` handler: each makes kopf list and watch that resource."""
    watches = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        decorator = ast.unparse(node.func)
        if decorator in ("kopf.on.event", "kopf.index"):
            group, _version, plural = (_constant(arg) for arg in node.args[:3])
            watches.append((group, plural))
    return watches


def required_rules() -> Rules:
    rules: Rules = {}
    for attr, method in client_calls((OPERATOR / "kube.py").read_text()):
        if attr == "custom":
            match = _CUSTOM.match(method)
            assert match, f"unrecognised custom-object call {method}"
            resource = api.PLURAL + ("/status" if match["status"] else "")
            _add(rules, api.GROUP, resource, _VERBS[match["verb"]])
            continue
        match = _TYPED.match(method)
        assert match, f"unrecognised client call {attr}.{method}"
        kind = match["kind"] or match["everywhere"]
        resource = _PLURALS[kind] + ("/status" if match["status"] else "")
        _add(rules, _API_GROUPS[attr], resource, _VERBS[match["verb"]])
    for group, plural in kopf_watches((OPERATOR / "handlers.py").read_text()):
        _add(rules, group, plural, "list")
        _add(rules, group, plural, "watch")
    owner_ref = Owner(name="x", namespace="y", uid="z").owner_reference()
    if owner_ref.get("blockOwnerDeletion"):
        # OwnerReferencesPermissionEnforcement: setting blockOwnerDeletion needs this.
        _add(rules, api.GROUP, f"{api.PLURAL}/finalizers", "update")
    return rules


def role_rules(role: dict[str, object]) -> Rules:
    """A Role's or ClusterRole's rules in the same shape."""
    rules: Rules = {}
    for rule in role["rules"]:  # type: ignore[attr-defined]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    _add(rules, group, resource, verb)
    return rules
