"""The lifecycle of one pod on a node of the local node agent (test infrastructure standing
in for kubelet + a container runtime): address, volumes, init containers, containers,
status reports, restarts, deadline, and graceful deletion. One thread per pod, woken by
pod updates and process exits; never a busy loop."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from finetune_localcluster import podstatus
from finetune_localcluster.container import ContainerRun
from finetune_localcluster.images import LocalImages, simulated_pull_error
from finetune_localcluster.ippool import LoopbackAddressPool
from finetune_localcluster.kubeapi import ApiError, KubeAPI
from finetune_localcluster.podenv import ContainerConfigError, EnvResolver, expand
from finetune_localcluster.volumes import VolumeBuilder, VolumeSetupError

log = logging.getLogger(__name__)

# API data volumes are always mounted read-only by kubelet.
READ_ONLY_VOLUME_TYPES = ("configMap", "secret", "downwardAPI", "projected")
CONFIG_RETRY = (1.0, 10.0)  # first and maximum delay between CreateContainerConfigError retries
IMAGE_RETRY = (1.0, 10.0)
IMAGE_SYNC_DELAY = 0.5  # from a failed pull to the ImagePullBackOff report
VOLUME_RETRY = (1.0, 10.0)
SHUTDOWN_GRACE_SECONDS = 2.0
IDLE_WAKEUP_SECONDS = 30.0


class _Shutdown(Exception):
    """The agent is stopping: kill the processes, make no API calls."""


def _hosts_file(pod_ip: str, hostname: str) -> str:
    return (
        "# Kubernetes-managed hosts file (local node agent).\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{pod_ip}\t{hostname}\n"
    )


class PodHost(Protocol):
    """What a pod worker needs from the node agent that runs it: where pods keep their
    files, the pod addresses and local images, the node's capacity and base environment,
    and where to report Events and the worker's end."""

    @property
    def pods_dir(self) -> Path: ...

    @property
    def memory_dir(self) -> Path: ...

    @property
    def addresses(self) -> LoopbackAddressPool: ...

    @property
    def images(self) -> LocalImages: ...

    def allocatable(self, node_name: str) -> dict[str, str]: ...

    def base_env(self, hostname: str, image: str = "") -> dict[str, str]: ...

    def record_event(
        self,
        worker: PodWorker,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        container: ContainerRun | None = None,
    ) -> None: ...

    def worker_finished(self, worker: PodWorker) -> None: ...


class PodWorker(threading.Thread):
    """Runs one pod bound to `node_name` until it is terminal or deleted."""

    def __init__(
        self, agent: PodHost, node_name: str, api: KubeAPI, pod: Mapping[str, Any]
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.node_name = node_name
        self.api = api
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self._pod: Mapping[str, Any] = pod
        self._gone = False
        self._stopping = False
        self._cond = threading.Condition()
        self.pod_dir = agent.pods_dir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.memory_dir = agent.memory_dir / self.uid
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.host_network = bool(spec.get("hostNetwork"))
        self.hostname: str = spec.get("hostname") or self.pod_name
        self.init_containers = [
            ContainerRun(c, self.pod_dir / "containers" / c["name"], init=True)
            for c in spec.get("initContainers") or []
        ]
        self.containers = [
            ContainerRun(c, self.pod_dir / "containers" / c["name"], init=False)
            for c in spec.get("containers") or []
        ]
        if self.init_containers:
            for container in self.containers:
                container.state = podstatus.waiting("PodInitializing")
        self.pod_ip: str | None = None
        self.start_time: str | None = None
        self.volumes: dict[str, Path] | None = None
        self._next_volume_attempt = 0.0
        self._volume_delay = 0.0
        self._init_failed = False
        self._pod_reason: str | None = None
        self._pod_message: str | None = None
        self._conditions = podstatus.ConditionTracker()
        self._published: dict[str, Any] | None = None
        self._publish_retry_at = 0.0
        self._started_monotonic: float | None = None

    # --- called from the agent's threads -------------------------------------------------
    def update(self, pod: Mapping[str, Any]) -> None:
        """A newer version of the pod from the watch."""
        with self._cond:
            self._pod = pod
            self._cond.notify_all()

    def gone(self) -> None:
        """The pod object no longer exists in the API."""
        with self._cond:
            self._gone = True
            self._cond.notify_all()

    def shutdown(self) -> None:
        """Stop the pod's processes because the agent stops (no API calls)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except _Shutdown:
            self._stop_processes(SHUTDOWN_GRACE_SECONDS)
        except Exception:
            log.exception("pod %s/%s: worker failed", self.namespace, self.pod_name)
        finally:
            self._stop_processes(SHUTDOWN_GRACE_SECONDS)
            self._release()
            self.agent.worker_finished(self)

    def _snapshot(self) -> tuple[Mapping[str, Any], bool]:
        with self._cond:
            if self._stopping:
                raise _Shutdown
            return self._pod, self._gone

    def _run(self) -> None:
        pod, gone = self._snapshot()
        if gone or pod["metadata"].get("deletionTimestamp"):
            self._finish_deleted(pod, gone)
            return
        self._start_sandbox()
        while True:
            pod, gone = self._snapshot()
            if gone or pod["metadata"].get("deletionTimestamp"):
                self._finish_deleted(pod, gone)
                return
            if self._deadline_exceeded(pod):
                self._fail_deadline()
                self._publish(force=True)
                return
            self._reap()
            self._advance(pod)
            phase = self._publish()
            if phase in ("Succeeded", "Failed"):
                log.info("pod %s/%s finished: %s", self.namespace, self.pod_name, phase)
                return
            self._sleep(pod)

    def _sleep(self, pod: Mapping[str, Any]) -> None:
        now = time.monotonic()
        wake = now + IDLE_WAKEUP_SECONDS
        for container in self.init_containers + self.containers:
            if container.popen is None and not container.finished:
                wake = min(wake, container.next_attempt)
        if self.volumes is None:
            wake = min(wake, self._next_volume_attempt)
        if self._published is None:
            wake = min(wake, self._publish_retry_at)
        deadline = self._deadline_at(pod)
        if deadline is not None:
            wake = min(wake, deadline)
        with self._cond:
            if self._stopping or self._pod is not pod or self._gone:
                return
            self._cond.wait(max(0.05, wake - now))

    # --- sandbox and volumes --------------------------------------------------------------
    def _start_sandbox(self) -> None:
        """Give the pod its address and report it before any process starts, so
        `fieldRef: status.podIP` resolves."""
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self.memory_dir.mkdir(parents=True, exist_ok=True)
        self.pod_ip = "127.0.0.1" if self.host_network else self.agent.addresses.acquire()
        self.start_time = podstatus.now()
        self._started_monotonic = time.monotonic()
        (self.pod_dir / "hosts").write_text(_hosts_file(self.pod_ip, self.hostname))
        (self.pod_dir / "hostname").write_text(self.hostname + "\n")
        names = [c.name for c in self.containers + self.init_containers]
        (self.pod_dir / "containers.txt").write_text("\n".join(names) + "\n")
        log.info(
            "pod %s/%s on %s: address %s",
            self.namespace,
            self.pod_name,
            self.node_name,
            self.pod_ip,
        )
        self._publish(force=True)

    def _ensure_volumes(self, pod: Mapping[str, Any]) -> bool:
        if self.volumes is not None:
            return True
        if time.monotonic() < self._next_volume_attempt:
            return False
        builder = VolumeBuilder(
            self.api,
            self._pod_with_status(pod),
            self.pod_dir / "volumes",
            self.memory_dir,
            self.agent.allocatable(self.node_name),
        )
        try:
            self.volumes = builder.build_all()
            return True
        except (VolumeSetupError, ApiError) as error:
            message = str(error) if isinstance(error, VolumeSetupError) else error.message
            self.agent.record_event(self, "FailedMount", message, warning=True)
            self._volume_delay = min(max(self._volume_delay * 2, VOLUME_RETRY[0]), VOLUME_RETRY[1])
            self._next_volume_attempt = time.monotonic() + self._volume_delay
            return False

    def _pod_with_status(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """The pod as the downward API sees it: with this node's addresses even before the
        watch delivers the status this worker just wrote."""
        status = dict(pod.get("status") or {})
        status.update(self._network_status())
        return {**pod, "status": status}

    def _network_status(self) -> dict[str, Any]:
        assert self.pod_ip is not None
        return {
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
        }

    # --- containers -----------------------------------------------------------------------
    def _reap(self) -> None:
        """Record containers whose process exited."""
        for container in self.init_containers + self.containers:
            if container.popen is not None and container.popen.poll() is not None:
                policy = self.restart_policy
                if container.init and policy == "Always":
                    policy = "OnFailure"  # init containers never restart after success
                restarting = container.collect_exit(policy)
                if restarting:
                    self.agent.record_event(
                        self,
                        "BackOff",
                        f"Back-off restarting failed container {container.name} in pod "
                        f"{self.pod_name}_{self.namespace}({self.uid})",
                        warning=True,
                        container=container,
                    )
                    container.state = podstatus.waiting(
                        "CrashLoopBackOff",
                        f"back-off {int(container.retry_delay)}s restarting failed "
                        f"container={container.name} pod={self.pod_name}_{self.namespace}"
                        f"({self.uid})",
                    )
                elif container.init and container.state["terminated"]["exitCode"] != 0:
                    self._init_failed = True

    def _init_done(self) -> bool:
        return all(
            c.finished and c.state["terminated"]["exitCode"] == 0 for c in self.init_containers
        )

    def _advance(self, pod: Mapping[str, Any]) -> None:
        """Start whatever should run now: the next init container, or the containers."""
        if self._init_failed or not self._ensure_volumes(pod):
            return
        now = time.monotonic()
        if not self._init_done():
            current = next(c for c in self.init_containers if not c.finished)
            if current.due(now):
                self._try_start(pod, current)
            return
        for container in self.containers:
            if container.due(now):
                self._try_start(pod, container)

    def _try_start(self, pod: Mapping[str, Any], container: ContainerRun) -> None:
        spec = container.spec
        if not spec.get("command"):
            container.state = podstatus.waiting(
                "CreateContainerError",
                f'container "{container.name}" has no command: the local node agent does not'
                " pull images, so it can only run an explicit command",
            )
            container.next_attempt = float("inf")  # the spec is immutable: never retried
            return
        pull_error = simulated_pull_error(container.image)
        if pull_error is not None:
            self._image_pull_failed(container, pull_error)
            return
        pod_view = self._pod_with_status(pod)
        resolver = EnvResolver(
            self.api,
            pod_view,
            self.agent.allocatable(self.node_name),
            self.agent.base_env(self.hostname, container.image),
        )
        try:
            env = resolver.resolve(spec)
            mounts = self._mounts(pod, container, env)
        except ContainerConfigError as error:
            self._config_error(container, str(error))
            return
        except ApiError as error:
            self._config_error(container, error.message)
            return
        argv = resolver.command(spec, env)
        image_bin = self.agent.images.bin_dir(container.image)
        container.start(
            argv=argv,
            env=env,
            mounts=mounts,
            hostname=self.hostname,
            on_exit=self._notify,
            image_paths=[image_bin] if image_bin else [],
        )
        container.retry_delay = 0.0 if container.restart_count == 0 else container.retry_delay
        self.agent.record_event(
            self, "Started", f"Started container {container.name}", container=container
        )

    def _config_error(self, container: ContainerRun, message: str) -> None:
        container.wait_for_retry(
            podstatus.waiting("CreateContainerConfigError", message), *CONFIG_RETRY
        )
        self.agent.record_event(
            self, "Failed", f"Error: {message}", warning=True, container=container
        )

    def _image_pull_failed(self, container: ContainerRun, message: str) -> None:
        """Alternate like kubelet: a pull attempt fails with ErrImagePull, the next sync
        reports ImagePullBackOff until the back-off expires and the next attempt fails."""
        if container.state.get("waiting", {}).get("reason") == "ErrImagePull":
            container.wait_for_retry(
                podstatus.waiting(
                    "ImagePullBackOff", f'Back-off pulling image "{container.image}"'
                ),
                *IMAGE_RETRY,
            )
            self.agent.record_event(
                self,
                "BackOff",
                f'Back-off pulling image "{container.image}"',
                container=container,
            )
            return
        container.state = podstatus.waiting("ErrImagePull", message)
        container.next_attempt = time.monotonic() + IMAGE_SYNC_DELAY
        self.agent.record_event(
            self,
            "Failed",
            f'Failed to pull image "{container.image}": {message}',
            warning=True,
            container=container,
        )

    def _mounts(
        self, pod: Mapping[str, Any], container: ContainerRun, env: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Bind mounts for the container: its volumeMounts (subPath, readOnly honoured),
        plus the pod's /etc/hosts and /etc/hostname as kubelet provides them."""
        assert self.volumes is not None
        volumes_by_name = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: list[dict[str, Any]] = []
        for mount in container.spec.get("volumeMounts") or []:
            name = mount["name"]
            if name not in self.volumes:
                raise ContainerConfigError(f"cannot find volume {name!r} to mount into container")
            volume = volumes_by_name[name]
            source = self.volumes[name]
            sub_path = mount.get("subPath") or ""
            if mount.get("subPathExpr"):
                sub_path = expand(mount["subPathExpr"], env)
            if sub_path:
                parts = PurePosixPath(sub_path).parts
                if PurePosixPath(sub_path).is_absolute() or ".." in parts:
                    raise ContainerConfigError(f"invalid subPath {sub_path!r}")
                source = source.joinpath(*parts)
                if not source.exists():
                    if any(kind in volume for kind in READ_ONLY_VOLUME_TYPES):
                        raise ContainerConfigError(
                            f"failed to prepare subPath for volumeMount {name!r} of container"
                            f" {container.name!r}: {sub_path} does not exist"
                        )
                    source.mkdir(parents=True)  # kubelet creates missing subPath dirs
            read_only = bool(mount.get("readOnly")) or any(
                kind in volume for kind in READ_ONLY_VOLUME_TYPES
            )
            claim = volume.get("persistentVolumeClaim") or {}
            read_only = read_only or bool(claim.get("readOnly"))
            mounts.append(
                {"source": str(source), "target": mount["mountPath"], "read_only": read_only}
            )
        if not self.host_network:
            mounts.append(
                {"source": str(self.pod_dir / "hosts"), "target": "/etc/hosts", "read_only": False}
            )
            mounts.append(
                {
                    "source": str(self.pod_dir / "hostname"),
                    "target": "/etc/hostname",
                    "read_only": False,
                }
            )
        return mounts

    # --- deadline -------------------------------------------------------------------------
    def _deadline_at(self, pod: Mapping[str, Any]) -> float | None:
        seconds = pod["spec"].get("activeDeadlineSeconds")
        if seconds is None or self._started_monotonic is None:
            return None
        return float(self._started_monotonic + seconds)

    def _deadline_exceeded(self, pod: Mapping[str, Any]) -> bool:
        deadline = self._deadline_at(pod)
        return deadline is not None and time.monotonic() >= deadline

    def _fail_deadline(self) -> None:
        self._kill_all(0)
        self._pod_reason = "DeadlineExceeded"
        self._pod_message = "Pod was active on the node longer than the specified deadline"

    # --- stopping -------------------------------------------------------------------------
    def _kill_all(self, grace_seconds: float) -> None:
        """SIGTERM every running container, SIGKILL what is left after the grace period,
        and record every container as terminated."""
        live = [c for c in self.init_containers + self.containers if c.running()]
        for container in live:
            self.agent.record_event(
                self, "Killing", f"Stopping container {container.name}", container=container
            )
            container.signal_term()
        deadline = time.monotonic() + grace_seconds
        with self._cond:
            while any(c.running() for c in live) and time.monotonic() < deadline:
                if self._stopping:
                    break
                self._cond.wait(min(0.5, max(0.01, deadline - time.monotonic())))
        for container in live:
            if container.running():
                container.signal_kill()
            container.stop(5.0)  # reap, and kill any stray children in its group
        for container in self.init_containers + self.containers:
            if container.popen is not None:
                container.collect_exit("Never")
            container.mark_never_ran()

    def _finish_deleted(self, pod: Mapping[str, Any], gone: bool) -> None:
        """Graceful deletion, as kubelet does it: SIGTERM, wait the grace period, SIGKILL,
        report the final status, then remove the pod object with grace period 0."""
        grace = 0.0 if gone else float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        log.info(
            "pod %s/%s deleted: stopping containers (grace %.0fs)",
            self.namespace,
            self.pod_name,
            grace,
        )
        self._kill_all(grace)
        if gone:
            return
        if self.pod_ip is not None:
            self._publish(force=True, final=True)
        with contextlib.suppress(ApiError):
            self.api.delete(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )

    def _stop_processes(self, grace_seconds: float) -> None:
        for container in self.init_containers + self.containers:
            if container.popen is not None:
                container.stop(grace_seconds)

    def _release(self) -> None:
        if self.pod_ip is not None and not self.host_network:
            self.agent.addresses.release(self.pod_ip)
        # Secrets, tokens and emptyDirs go with the pod; logs stay for pod_logs().
        shutil.rmtree(self.memory_dir, ignore_errors=True)
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)

    # --- status ---------------------------------------------------------------------------
    def _status(self, final: bool) -> dict[str, Any]:
        init_statuses = [c.status() for c in self.init_containers]
        statuses = [c.status() for c in self.containers]
        init_done = self._init_done()
        if final:
            phase = podstatus.terminal_phase(statuses)
        elif self._pod_reason == "DeadlineExceeded" or self._init_failed:
            phase = "Failed"
        else:
            phase = podstatus.phase(self.restart_policy, not init_done, statuses)
        podstatus.update_conditions(
            self._conditions,
            sandbox_ready=self.pod_ip is not None and phase not in ("Succeeded", "Failed"),
            init_statuses=init_statuses,
            init_done=init_done,
            statuses=statuses,
            pod_phase=phase,
        )
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self._conditions.as_list(),
            "startTime": self.start_time,
            "containerStatuses": statuses,
            **self._network_status(),
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if self._pod_reason:
            status["reason"] = self._pod_reason
            status["message"] = self._pod_message
        return status

    def _publish(self, force: bool = False, final: bool = False) -> str:
        """Write the status if it changed; returns the phase."""
        status = self._status(final)
        if not force and status == self._published:
            return str(status["phase"])
        try:
            self.api.patch(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                {"status": status},
                strategic=True,
            )
            self._published = status
        except ApiError as error:
            if error.status == 404:
                self.gone()
            else:
                log.warning(
                    "pod %s/%s: status update failed: %s",
                    self.namespace,
                    self.pod_name,
                    error.message,
                )
                self._published = None
                self._publish_retry_at = time.monotonic() + 1.0
                return "Unknown"
        return str(status["phase"])
