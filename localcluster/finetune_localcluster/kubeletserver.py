"""A kubelet-style HTTPS endpoint of the node agent, so `kubectl logs` (pods/log, proxied
by the apiserver to the node's kubeletEndpoint) works for pods it runs.

Only /healthz and /containerLogs/{namespace}/{pod}/{container} (with follow, previous,
tailLines and limitBytes) are served. Clients must present a certificate signed by the
cluster CA (the apiserver's kubelet client certificate)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from finetune_localcluster.pki import CertPair

log = logging.getLogger(__name__)
FOLLOW_POLL_SECONDS = 0.2


class ContainerLogs(Protocol):
    """What the endpoint reads from the node agent: a container's log file and whether
    its pod still runs (a follow ends when it stops)."""

    def pod_log_path(
        self, namespace: str, pod_name: str, container: str | None = None, previous: bool = False
    ) -> Path | None: ...

    def pod_active(self, namespace: str, pod_name: str) -> bool: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    agent: ContainerLogs


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("kubelet endpoint: " + format, *args)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._reply(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, b"not found")
            return
        _, namespace, pod, container = parts
        previous = query.get("previous", ["false"])[0] == "true"
        path = self.server.agent.pod_log_path(namespace, pod, container, previous)
        if path is None:
            self._reply(404, f'container "{container}" in pod "{pod}" has no logs'.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        data = path.read_bytes()
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            data = (
                b"".join(lines[-int(query["tailLines"][0]) :])
                if int(query["tailLines"][0])
                else b""
            )
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"][0])]
        self.wfile.write(data)
        self.wfile.flush()
        if query.get("follow", ["false"])[0] == "true" and not previous:
            self._follow(path, path.stat().st_size, namespace, pod)

    def _follow(self, path: Path, offset: int, namespace: str, pod: str) -> None:
        agent = self.server.agent
        with open(path, "rb") as handle:
            handle.seek(offset)
            while True:
                chunk = handle.read(65536)
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    continue
                if not agent.pod_active(namespace, pod):
                    rest = handle.read()
                    if rest:
                        self.wfile.write(rest)
                    return
                time.sleep(FOLLOW_POLL_SECONDS)

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class KubeletServer:
    """The HTTPS endpoint on 127.0.0.1 (a free port) published in Node status."""

    def __init__(self, agent: ContainerLogs, serving: CertPair, ca_cert: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(serving.cert), str(serving.key))
        context.load_verify_locations(str(ca_cert))
        context.verify_mode = ssl.CERT_REQUIRED
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.agent = agent
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kubelet-endpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
