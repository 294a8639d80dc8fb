"""The `restricted` Pod Security Standard, checked on a pod spec (the admission test on the
local control plane is the authority; this names the failing field without a cluster)."""

from __future__ import annotations

from typing import Any

# Volume types the restricted profile allows.
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any], *, platform_assigns_user: bool = False) -> list[str]:
    """Every way ``pod`` (a PodSpec) breaks the restricted profile; empty when it passes.
    ``platform_assigns_user``: no runAsUser is set because the platform assigns one (as
    OpenShift's restricted-v2 does); one that is set must still not be root."""
    problems = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    containers = (pod.get("initContainers") or []) + pod["containers"]
    for container in containers:
        name = container["name"]
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = context.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        uid = context.get("runAsUser", pod_context.get("runAsUser"))
        if uid is None and platform_assigns_user:
            pass
        elif not isinstance(uid, int) or uid == 0:
            problems.append(f"{name}: no numeric non-zero runAsUser")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f"{name}: uses a hostPort")
        # Beyond the profile, the project's own rule: nothing writes to the image.
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
    return problems
