"""A container's environment, resolved the way kubelet does: envFrom, then env (later
entries win), with $(VAR) references expanded, values from Secrets, ConfigMaps and the
downward API, and the `kubernetes` Service variables.

A missing Secret, ConfigMap or key that is not optional raises ContainerConfigError with
kubelet's message; the agent reports it as `CreateContainerConfigError` and retries."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from finetune_localcluster.kubeapi import KubeAPI
from finetune_localcluster.quantity import divide_rounding_up

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """The container cannot be created from its spec yet (kubelet's
    CreateContainerConfigError); the message is kubelet's."""


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, `$$` escapes a `$`, and an
    undefined reference is left as written."""
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(variables.get(name, value[i : end + 1]))
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    """The downward API value of `field_path` for this pod."""
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs") or []),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs") or []),
    }
    if field_path in simple:
        return str(simple[field_path])
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", field_path)
    if match:
        mapping = metadata.get(match.group(1)) or {}
        if match.group(2) is not None:
            return str(mapping.get(match.group(2), ""))
        return "\n".join(f'{key}="{mapping[key]}"' for key in sorted(mapping))
    raise ContainerConfigError(f"unsupported fieldPath: {field_path}")


def resource_value(
    pod: Mapping[str, Any],
    container_name: str,
    ref: Mapping[str, Any],
    node_allocatable: Mapping[str, str],
) -> str:
    """The downward API value of a resourceFieldRef; without a limit, kubelet reports the
    node's allocatable amount, and so does this."""
    resource = ref["resource"]
    target = ref.get("containerName") or container_name
    containers = pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
    container = next((c for c in containers if c["name"] == target), None)
    if container is None:
        raise ContainerConfigError(f"container {target} not found in pod")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = node_allocatable.get(name, "0")
    return divide_rounding_up(str(value), ref.get("divisor"))


class EnvResolver:
    """Resolves env for the containers of one pod, reading Secrets and ConfigMaps with the
    node's credentials (the Node authorizer lets a node read only what its pods use)."""

    def __init__(
        self,
        api: KubeAPI,
        pod: Mapping[str, Any],
        node_allocatable: Mapping[str, str],
        base_env: Mapping[str, str],
    ) -> None:
        self.api = api
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.node_allocatable = node_allocatable
        self.base_env = base_env

    def _object(self, kind: str, name: str) -> dict[str, Any] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        obj = self.api.get_or_none(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        return dict(obj) if obj is not None else None

    def _data(self, kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
        if kind == "secret":
            return {
                key: base64.b64decode(value).decode(errors="replace")
                for key, value in (obj.get("data") or {}).items()
            }
        return dict(obj.get("data") or {})

    def _key_ref(self, kind: str, ref: Mapping[str, Any]) -> str | None:
        name, key = ref.get("name", ""), ref["key"]
        optional = bool(ref.get("optional"))
        obj = self._object(kind, name)
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind} "{name}" not found')
        data = self._data(kind, obj)
        if key not in data:
            if optional:
                return None
            title = "Secret" if kind == "secret" else "ConfigMap"
            raise ContainerConfigError(
                f"couldn't find key {key} in {title} {self.namespace}/{name}"
            )
        return data[key]

    def resolve(self, container: Mapping[str, Any]) -> dict[str, str]:
        """The full environment of `container`, base environment first."""
        env: dict[str, str] = dict(self.base_env)
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
                ref = source.get(field)
                if ref is None:
                    continue
                obj = self._object(kind, ref.get("name", ""))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(f'{kind} "{ref.get("name", "")}" not found')
                for key, data in self._data(kind, obj).items():
                    # Kubelet skips keys that are not valid variable names (with an event).
                    if ENV_NAME.match(prefix + key):
                        env[prefix + key] = data
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var or "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            source = var["valueFrom"]
            value: str | None
            if "secretKeyRef" in source:
                value = self._key_ref("secret", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = self._key_ref("configmap", source["configMapKeyRef"])
            elif "fieldRef" in source:
                value = field_value(self.pod, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                value = resource_value(
                    self.pod, container["name"], source["resourceFieldRef"], self.node_allocatable
                )
            else:
                raise ContainerConfigError(f"unsupported valueFrom for env {name}")
            if value is not None:
                env[name] = value
        return env

    def command(self, container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
        """command + args with $(VAR) references expanded against the container's env."""
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        return [expand(arg, env) for arg in argv]
