"""Every API call the operator makes ends within its timeouts, even when the API server
accepts the connection and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client

from finetune_operator.kube import Kube
from finetune_operator.runner import with_connection_settings


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and reads requests, but never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def test_a_silent_api_server_costs_the_read_timeout_and_no_more(silent_server: str) -> None:
    configuration = with_connection_settings(client.Configuration())
    configuration.host = silent_server
    kube = Kube(client.ApiClient(configuration), timeout=(1.0, 1.5))
    ftj = {"metadata": {"namespace": "ml", "name": "x", "resourceVersion": "1"}}
    for call in (
        lambda: kube.get_job("ml", "j"),
        lambda: kube.patch_status(ftj, {"phase": "Running"}),
        lambda: kube.ensure({"kind": "Job", "metadata": {"namespace": "ml", "name": "j"}}, "u"),
    ):
        began = time.monotonic()
        with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
            call()
        assert time.monotonic() - began < 3.0
    # Event posting is best effort: a silent server costs the timeout, not an exception.
    began = time.monotonic()
    assert kube.create_event("ml", {"reason": "X"}) is None
    assert time.monotonic() - began < 3.0


def test_pooled_connections_use_tcp_keepalive() -> None:
    options = with_connection_settings(client.Configuration()).socket_options
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30) in options
