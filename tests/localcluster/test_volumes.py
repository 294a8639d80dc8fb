"""Volumes appear at their exact mountPaths inside the pod's private mount namespace."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finetune_localcluster import manifests
from finetune_localcluster.kubeapi import KubeAPI
from finetune_localcluster.podquery import container_state, get_pod

pytestmark = pytest.mark.e2e

WaitFor = Callable[..., Any]

CHECK_MOUNTS = r"""
import os, pathlib, stat
print(open('/etc/finetune/config.yaml').read().strip())
print(open('/etc/finetune-secret/creds/key').read().strip())
print(oct(stat.S_IMODE(os.stat('/etc/finetune-secret/creds/key').st_mode)))
print(sorted(os.listdir('/etc/finetune')))
try:
    open('/etc/finetune/new', 'w')
except OSError as error:
    print('read-only', error.errno == 30)
pathlib.Path('/scratch/tmp.txt').write_text('scratch')
print(pathlib.Path('/scratch/tmp.txt').read_text())
with open('/dev/shm/x', 'w') as f:
    f.write('shm')
print(os.statvfs('/dev/shm').f_bsize > 0)
pathlib.Path('/mnt/pvc/outputs/adapter').mkdir(parents=True, exist_ok=True)
pathlib.Path('/mnt/pvc/outputs/adapter/weights.bin').write_text('w')
print(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())
print(len(open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()) > 100)
print(open('/etc/podinfo/name').read())
"""


def test_volumes_are_mounted_at_their_mount_paths(
    api: KubeAPI,
    namespace: str,
    make_pvc: Any,
    wait_for: WaitFor,
    pod_logs: Any,
) -> None:
    host_dir = make_pvc(namespace, "outputs")
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "trainer-config"}, "data": {"config": "model: tiny", "x": "y"}},
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"key": "abc"}},
    )
    mounts = [
        {"name": "config", "mountPath": "/etc/finetune"},
        {"name": "secret", "mountPath": "/etc/finetune-secret"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "outputs", "mountPath": "/mnt/pvc/outputs"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
    ]
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": "trainer-config",
                "items": [{"key": "config", "path": "config.yaml"}],
            },
        },
        {
            "name": "secret",
            "secret": {
                "secretName": "creds",
                "defaultMode": 0o400,
                "items": [{"key": "key", "path": "creds/key"}],
            },
        },
        {"name": "scratch", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
        {"name": "outputs", "persistentVolumeClaim": {"claimName": "outputs"}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
            },
        },
    ]
    container = manifests.container("main", ["python", "-c", CHECK_MOUNTS], volume_mounts=mounts)
    spec = manifests.pod_spec([container], volumes=volumes)
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("mounts", namespace, spec))
    wait_for(
        lambda: "terminated" in container_state(get_pod(api, namespace, "mounts")),
        30,
        message="the pod to finish",
    )
    logs = pod_logs(namespace, "mounts")
    assert get_pod(api, namespace, "mounts")["status"]["phase"] == "Succeeded", logs
    assert logs.splitlines() == [
        "model: tiny",
        "abc",
        "0o400",
        "['config.yaml']",
        "read-only True",
        "scratch",
        "True",
        namespace,
        "True",
        "mounts",
    ]
    assert (host_dir / "adapter" / "weights.bin").read_text() == "w"
    # Mount points were created in the pod's namespace only, never on the host.
    for path in ("/etc/finetune", "/scratch", "/mnt/pvc/outputs", "/etc/podinfo"):
        assert not os.path.exists(path), path


def test_sub_path_and_read_only_pvc(
    api: KubeAPI, namespace: str, make_pvc: Any, wait_for: WaitFor, pod_logs: Any
) -> None:
    host_dir: Path = make_pvc(namespace, "data")
    (host_dir / "datasets").mkdir()
    (host_dir / "datasets" / "train.jsonl").write_text('{"text": "hi"}\n')
    script = "cat /data/train.jsonl; touch /data/new 2>/dev/null && echo writable || echo read-only"
    mounts = [{"name": "data", "mountPath": "/data", "subPath": "datasets", "readOnly": True}]
    container = manifests.container("main", ["bash", "-c", script], volume_mounts=mounts)
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    spec = manifests.pod_spec([container], volumes=volumes)
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("subpath", namespace, spec))
    wait_for(
        lambda: get_pod(api, namespace, "subpath")["status"]["phase"] == "Succeeded",
        30,
        message="the pod to succeed",
    )
    assert pod_logs(namespace, "subpath") == '{"text": "hi"}\nread-only\n'


def test_pvc_binds_to_a_host_path_pv(api: KubeAPI, namespace: str, make_pvc: Any) -> None:
    host_dir = make_pvc(namespace, "ckpt", size="2Gi")
    claim = api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/ckpt")
    assert claim["status"]["phase"] == "Bound"
    volume = api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    assert volume["spec"]["hostPath"]["path"] == str(host_dir)
    assert volume["status"]["phase"] == "Bound"
    assert claim["status"]["capacity"]["storage"] == "2Gi"


def test_missing_config_map_volume_keeps_the_pod_creating(
    api: KubeAPI, namespace: str, wait_for: WaitFor
) -> None:
    container = manifests.container(
        "main", ["true"], volume_mounts=[{"name": "c", "mountPath": "/etc/c"}]
    )
    spec = manifests.pod_spec([container], volumes=[{"name": "c", "configMap": {"name": "absent"}}])
    api.create(f"/api/v1/namespaces/{namespace}/pods", manifests.pod("nomount", namespace, spec))

    def failed_mount() -> list[dict[str, Any]]:
        events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        return [e for e in events if e["reason"] == "FailedMount"]

    (event, *_) = wait_for(failed_mount, 30, message="a FailedMount event")
    assert event["message"] == (
        'MountVolume.SetUp failed for volume "c" : configmap "absent" not found'
    )
    pod = get_pod(api, namespace, "nomount")
    assert pod["status"]["phase"] == "Pending"
    assert container_state(pod)["waiting"]["reason"] == "ContainerCreating"


def test_a_volume_over_the_project_does_not_hide_its_environment(
    api: KubeAPI, namespace: str, wait_for: WaitFor, pod_logs: Any
) -> None:
    """The project's virtualenv and sources stand in for the image: an emptyDir mounted
    over the directory that holds them (as /tmp is, when the checkout lives under /tmp)
    covers everything else there but not them."""
    import sys
    import tempfile

    top = "/" + Path(os.path.realpath(sys.prefix)).parts[1]
    with tempfile.NamedTemporaryFile(dir=top, prefix="covered-") as marker:
        script = (
            "import os, finetune_trainer; "
            f"print(os.path.isdir({sys.prefix!r}), os.path.exists({marker.name!r}))"
        )
        mounts = [{"name": "cover", "mountPath": top}]
        container = manifests.container(
            "main", [sys.executable, "-c", script], volume_mounts=mounts
        )
        spec = manifests.pod_spec([container], volumes=[{"name": "cover", "emptyDir": {}}])
        api.create(
            f"/api/v1/namespaces/{namespace}/pods", manifests.pod("covered", namespace, spec)
        )
        wait_for(
            lambda: "terminated" in container_state(get_pod(api, namespace, "covered")),
            30,
            message="the pod to finish",
        )
    logs = pod_logs(namespace, "covered")
    assert get_pod(api, namespace, "covered")["status"]["phase"] == "Succeeded", logs
    # The interpreter, virtualenv and package are there; the rest of the directory is not.
    assert logs.splitlines() == ["True False"]
