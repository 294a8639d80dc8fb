"""A pod's volumes, materialised as host directories for the node agent to bind-mount.

configMap, secret, downwardAPI and projected volumes are written as files (keys, items,
paths and modes honoured; secrets and tokens on a memory-backed tmpfs as kubelet does);
emptyDir is a fresh directory (on /dev/shm for `medium: Memory`); persistentVolumeClaim
volumes map to the bound PersistentVolume's hostPath (or local path); hostPath volumes map
to their path. Files are written once when the pod starts: later edits of a ConfigMap or
Secret are not propagated (a documented limit of this test node agent)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from finetune_localcluster.kubeapi import KubeAPI
from finetune_localcluster.podenv import ContainerConfigError, field_value, resource_value

DEFAULT_FILE_MODE = 0o644
# Kubelet's default for the kube-api-access token projection.
DEFAULT_TOKEN_SECONDS = 3607


class VolumeSetupError(Exception):
    """A volume cannot be set up yet (kubelet's FailedMount); retried by the agent."""


def _safe_join(base: Path, relative: str) -> Path:
    """base/relative, refusing absolute paths and `..` (the API validates this too)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise VolumeSetupError(f"invalid path {relative!r} in volume")
    return base.joinpath(*parts)


def _write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(path, mode)


class VolumeBuilder:
    """Builds the volumes of one pod under `disk_dir` (and `memory_dir` for tmpfs-backed
    ones), reading API objects with the node's credentials."""

    def __init__(
        self,
        api: KubeAPI,
        pod: Mapping[str, Any],
        disk_dir: Path,
        memory_dir: Path,
        node_allocatable: Mapping[str, str],
    ) -> None:
        self.api = api
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.disk_dir = disk_dir
        self.memory_dir = memory_dir
        self.node_allocatable = node_allocatable

    def build_all(self) -> dict[str, Path]:
        """Every volume of the pod as {volume name: host path}. Rebuilt from scratch on each
        call, so a retry after a FailedMount sees the current Secrets and ConfigMaps."""
        paths: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            try:
                paths[name] = self._build(volume)
            except (VolumeSetupError, ContainerConfigError) as error:
                raise VolumeSetupError(
                    f'MountVolume.SetUp failed for volume "{name}" : {error}'
                ) from error
        return paths

    def _fresh_dir(self, base: Path, name: str) -> Path:
        path = base / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def _build(self, volume: Mapping[str, Any]) -> Path:
        name = volume["name"]
        if "emptyDir" in volume:
            medium = (volume["emptyDir"] or {}).get("medium", "")
            base = self.memory_dir if medium == "Memory" else self.disk_dir
            path: Path = base / "empty" / name
            # Kept across container restarts, as an emptyDir lives as long as its pod.
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "configMap" in volume:
            source = volume["configMap"]
            path = self._fresh_dir(self.disk_dir / "configmap", name)
            self._write_keys(path, "configmap", source.get("name", ""), source, source)
            return path
        if "secret" in volume:
            source = volume["secret"]
            path = self._fresh_dir(self.memory_dir / "secret", name)
            self._write_keys(path, "secret", source.get("secretName", ""), source, source)
            return path
        if "downwardAPI" in volume:
            source = volume["downwardAPI"]
            path = self._fresh_dir(self.disk_dir / "downward", name)
            self._write_downward(path, source.get("items") or [], source.get("defaultMode"))
            return path
        if "projected" in volume:
            path = self._fresh_dir(self.memory_dir / "projected", name)
            self._write_projected(path, volume["projected"])
            return path
        if "persistentVolumeClaim" in volume:
            return self._claim_path(volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            return self._host_path(volume["hostPath"])
        kinds = sorted(k for k in volume if k != "name")
        raise VolumeSetupError(f"volume type {kinds} is not supported by the local node agent")

    # --- key/value volumes ----------------------------------------------------------------
    def _read_data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        obj = self.api.get_or_none(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        if obj is None:
            if optional:
                return None
            raise VolumeSetupError(f'{kind} "{name}" not found')
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _write_keys(
        self,
        path: Path,
        kind: str,
        name: str,
        source: Mapping[str, Any],
        volume_source: Mapping[str, Any],
    ) -> None:
        data = self._read_data(kind, name, bool(source.get("optional")))
        if data is None:
            return
        default_mode = volume_source.get("defaultMode", DEFAULT_FILE_MODE)
        items = source.get("items")
        if not items:
            for key, content in data.items():
                _write(_safe_join(path, key), content, default_mode)
            return
        for item in items:
            key = item["key"]
            if key not in data:
                if source.get("optional"):
                    continue
                raise VolumeSetupError(f"{kind} references non-existent {kind} key: {key}")
            _write(_safe_join(path, item["path"]), data[key], item.get("mode", default_mode))

    # --- downward API and projections ----------------------------------------------------
    def _downward_value(self, item: Mapping[str, Any]) -> str:
        if "fieldRef" in item:
            return field_value(self.pod, item["fieldRef"]["fieldPath"])
        ref = item["resourceFieldRef"]
        container = ref.get("containerName") or self.pod["spec"]["containers"][0]["name"]
        return resource_value(self.pod, container, ref, self.node_allocatable)

    def _write_downward(
        self, path: Path, items: list[Mapping[str, Any]], default_mode: int | None
    ) -> None:
        for item in items:
            mode = item.get("mode", default_mode or DEFAULT_FILE_MODE)
            _write(_safe_join(path, item["path"]), self._downward_value(item).encode(), mode)

    def _write_projected(self, path: Path, projected: Mapping[str, Any]) -> None:
        default_mode = projected.get("defaultMode", DEFAULT_FILE_MODE)
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token_source = source["serviceAccountToken"]
                token = self._service_account_token(token_source)
                _write(_safe_join(path, token_source["path"]), token.encode(), default_mode)
            elif "configMap" in source:
                cm = source["configMap"]
                self._write_keys(path, "configmap", cm.get("name", ""), cm, projected)
            elif "secret" in source:
                secret = source["secret"]
                self._write_keys(path, "secret", secret.get("name", ""), secret, projected)
            elif "downwardAPI" in source:
                self._write_downward(path, source["downwardAPI"].get("items") or [], default_mode)
            else:
                kinds = sorted(source)
                raise VolumeSetupError(f"projection {kinds} is not supported by the node agent")

    def _service_account_token(self, source: Mapping[str, Any]) -> str:
        """A token bound to this pod from the TokenRequest API, as kubelet requests it."""
        account = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": source.get("expirationSeconds", DEFAULT_TOKEN_SECONDS),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.pod["metadata"]["name"],
                "uid": self.pod["metadata"]["uid"],
            },
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        result = self.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(result["status"]["token"])

    # --- storage --------------------------------------------------------------------------
    def _claim_path(self, claim_name: str) -> Path:
        claim = self.api.get_or_none(
            f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim_name}"
        )
        if claim is None:
            raise VolumeSetupError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = claim.get("spec", {}).get("volumeName")
        if not volume_name or claim.get("status", {}).get("phase") != "Bound":
            raise VolumeSetupError(f'persistentvolumeclaim "{claim_name}" is not bound')
        volume = self.api.get_or_none(f"/api/v1/persistentvolumes/{volume_name}")
        if volume is None:
            raise VolumeSetupError(f'persistentvolume "{volume_name}" not found')
        spec = volume["spec"]
        if "hostPath" in spec:
            return self._host_path(spec["hostPath"])
        if "local" in spec:
            return Path(spec["local"]["path"])
        kinds = sorted(k for k in spec if isinstance(spec[k], dict) and "path" in spec[k])
        raise VolumeSetupError(
            f"persistentvolume {volume_name} is not a hostPath or local volume ({kinds}); "
            "the local node agent mounts only those"
        )

    def _host_path(self, source: Mapping[str, Any]) -> Path:
        path = Path(source["path"])
        kind = source.get("type", "")
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        if not path.exists():
            raise VolumeSetupError(f"hostPath {path} does not exist")
        return path
