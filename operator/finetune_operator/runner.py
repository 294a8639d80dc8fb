"""Run the operator: as ``finetune-operator`` (a container's entry point), through
``kopf run -m finetune_operator.kopf_entry``, or embedded in a thread (tests, demos)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as kube_config
from urllib3.connection import HTTPConnection
from urllib3.util.retry import Retry

from .config import OperatorConfig
from .handlers import register
from .metrics import OperatorMetrics
from .operator_runtime import OperatorRuntime

log = logging.getLogger(__name__)


def load_api_client(kubeconfig: str | None = None, *, workers: int = 8) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (or $KUBECONFIG).
    The connection pool holds one connection per reconcile worker, the Event poster's and a
    spare: with fewer, connections would be closed and opened again (a TLS handshake each)
    under load."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = workers + 2
    with_connection_settings(configuration)
    if kubeconfig is None:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except kube_config.ConfigException:
            pass
    kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


def with_connection_settings(configuration: client.Configuration) -> client.Configuration:
    """How the operator's own client talks to the API server:

    - TCP keepalive on pooled connections: a peer that vanished (a restarted API server
      behind a load balancer, a dropped NAT entry) is noticed within a minute instead of on
      the next request's read timeout;
    - a connection that fails is retried once, a request that was sent never: a call then
      ends within its (connect, read) timeout, and the work queue retries the reconcile."""
    options = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):  # Linux; other platforms keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    configuration.socket_options = options
    configuration.retries = Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)
    return configuration


def connection_info(api_client: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the reconciler uses, so both
    talk to the same server as the same user."""
    cfg = api_client.configuration
    if cfg.refresh_api_key_hook is not None:
        # In-cluster: re-read the projected ServiceAccount token, which the kubelet rotates.
        cfg.refresh_api_key_hook(cfg)
    keys = cfg.api_key or {}
    auth = keys.get("authorization") or keys.get("BearerToken")
    token = None
    if auth:
        # The in-cluster loader stores "bearer <token>" (lower case); kubeconfigs "Bearer".
        scheme, _, value = auth.strip().partition(" ")
        token = value.strip() if value and scheme.lower() == "bearer" else auth.strip()
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=token,
    )


def build_registry(runtime: OperatorRuntime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    api_client = runtime.kube.api_client

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api_client)

    return registry


async def run(
    api_client: client.ApiClient,
    config: OperatorConfig,
    *,
    stop_flag: Any = None,
    ready_flag: Any = None,
    liveness: bool = True,
    metrics: OperatorMetrics | None = None,
    runtime: OperatorRuntime | None = None,
) -> None:
    """Run the operator until stop_flag is set. Without ``metrics`` the operator serves
    its own on config.metrics_host:metrics_port; with them, the caller decides."""
    if metrics is None:
        metrics = OperatorMetrics()
        metrics.serve(config.metrics_host, config.metrics_port)
    registry = build_registry(runtime or OperatorRuntime.build(api_client, config, metrics))
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint if liveness else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


class EmbeddedOperator:
    """The operator in a background thread with its own event loop:

    with EmbeddedOperator(api_client, config):
        ...  # FineTuneJobs are reconciled
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        config: OperatorConfig,
        *,
        liveness: bool = False,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api_client = api_client
        self.config = config
        self.liveness = liveness
        # Not served: the embedding process reads them from this object.
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        # Every part of the running operator, for tests that look inside.
        self.runtime = OperatorRuntime.build(api_client, config, self.metrics)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 60) -> EmbeddedOperator:
        self._thread = threading.Thread(target=self._main, name="finetune-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the operator did not become ready: {self.error!r}")
        return self

    def _main(self) -> None:
        try:
            asyncio.run(
                run(
                    self.api_client,
                    self.config,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    liveness=self.liveness,
                    metrics=self.metrics,
                    runtime=self.runtime,
                )
            )
        except BaseException as exc:  # reported to the test that started it
            self.error = exc
            self._ready.set()

    def stop(self, timeout: float = 60) -> None:
        """Stop and wait for the operator to end. Raises if it is still running after
        ``timeout`` seconds: a second operator started beside it would act on the same
        FineTuneJobs."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the operator did not stop within {timeout:.0f}s")

    def __enter__(self) -> EmbeddedOperator:
        return self.start()

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.stop()
            return
        try:  # an exception is already on its way: a failure to stop must not hide it
            self.stop()
        except RuntimeError as exc:
            log.error("%s", exc)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="finetune-operator",
        description="Run the finetune-operator. Settings come from FTO_* environment variables "
        "(see the chart's values.yaml); flags override the namespaces.",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="namespace to watch (repeatable); default: FTO_NAMESPACES or all namespaces",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    config = OperatorConfig.from_env()
    if args.namespace:
        config = OperatorConfig(**{**config.__dict__, "namespaces": tuple(args.namespace)})
    kopf.configure(
        verbose=args.verbose or config.log_level == "DEBUG",
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel("DEBUG" if args.verbose else config.log_level)
    asyncio.run(run(load_api_client(args.kubeconfig, workers=config.workers), config))
