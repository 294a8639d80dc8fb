"""Per-pod loopback addresses (127.0.0.x) for the node agent.

Linux routes all of 127.0.0.0/8 to the loopback device, so a pod can bind its own address
with no network setup, and the tests reach the pod's ports there. An address is held with
an exclusive lock on a file in a machine-wide directory, so node agents of concurrent test
sessions never hand out the same address; the kernel drops the lock if the agent dies."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import tempfile
import threading
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "finetune-localcluster-pod-ips"
# 127.0.0.1 is the host (the apiserver and the node's hostIP); pods get the rest of the /24.
FIRST, LAST = 2, 254


class AddressPoolExhausted(RuntimeError):
    """Every address of the pool is held by a running pod."""


class LoopbackAddressPool:
    """Hands out 127.0.0.x addresses, round-robin so a just-released address (whose ports
    may linger in TIME_WAIT) is the last to be reused."""

    def __init__(self, lock_dir: Path = LOCK_DIR) -> None:
        self._lock_dir = lock_dir
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}
        self._next = FIRST
        self._mutex = threading.Lock()

    def acquire(self) -> str:
        """Reserve a free address; raises AddressPoolExhausted if none is left."""
        with self._mutex:
            for offset in range(LAST - FIRST + 1):
                host = FIRST + (self._next - FIRST + offset) % (LAST - FIRST + 1)
                address = str(ipaddress.IPv4Address(f"127.0.0.{host}"))
                if address in self._held:
                    continue
                fd = os.open(self._lock_dir / address, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self._held[address] = fd
                self._next = host + 1
                return address
        raise AddressPoolExhausted("no free 127.0.0.x address for a new pod")

    def release(self, address: str) -> None:
        """Return an address to the pool (a no-op for one not held)."""
        with self._mutex:
            fd = self._held.pop(address, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release_all(self) -> None:
        for address in list(self._held):
            self.release(address)
