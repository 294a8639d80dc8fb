"""Trainer metrics endpoints on real loopback sockets, well-behaved and hostile, for the
scrape and poller tests."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

EXPOSITION = (
    "# TYPE finetune_step gauge\nfinetune_step {step}\n"
    "# TYPE finetune_total_steps gauge\nfinetune_total_steps 20\n"
    "# TYPE finetune_loss gauge\nfinetune_loss 1.5\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(30)
        try:
            self.request.recv(4096)  # the request; its content does not matter here
            self.server.behaviour(self.request, self.server)
        except OSError:
            pass  # the client gave up, as it should


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], behaviour, step: int) -> None:  # type: ignore[no-untyped-def]
        self.behaviour = behaviour
        self.step = step
        self.requests = 0
        self.answered: list[float] = []  # when each answer was sent (time.monotonic)
        super().__init__(address, _Handler)


def healthy(sock: socket.socket, server: _Server) -> None:
    server.requests += 1
    body = EXPOSITION.format(step=server.step).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    sock.sendall(head.encode() + body)
    server.answered.append(time.monotonic())


def just_in_time(sock: socket.socket, server: _Server) -> None:
    """Answers well, but only after a second: inside a deadline of 1.5 s, every time."""
    time.sleep(1.0)
    healthy(sock, server)


def slow_loris(sock: socket.socket, server: _Server) -> None:
    """Promises a megabyte and sends one byte a second."""
    _drip(sock, server, 1048576)


def slow_drip(sock: socket.socket, server: _Server) -> None:
    """Promises a plausible 2 KB body and sends one byte a second: only a total deadline
    ends this read."""
    _drip(sock, server, 2048)


def _drip(sock: socket.socket, server: _Server, length: int) -> None:
    server.requests += 1
    sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
    for _ in range(120):
        sock.sendall(b"#")
        time.sleep(1)


def flood(sock: socket.socket, server: _Server) -> None:
    """Sends ten megabytes as fast as it can, with no length announced."""
    server.requests += 1
    sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunk = b"finetune_step 1\n" * 4096
    for _ in range(160):
        sock.sendall(chunk)


def redirect(sock: socket.socket, server: _Server) -> None:
    server.requests += 1
    sock.sendall(
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


@contextmanager
def serving(host: str, port: int, behaviour, step: int = 3) -> Iterator[_Server]:  # type: ignore[no-untyped-def]
    server = _Server((host, port), behaviour, step)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
