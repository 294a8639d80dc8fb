"""A thin JSON client for the Kubernetes REST API over urllib3, authenticating with a
client certificate.

The node agent works with plain dicts in the API's own camelCase shape, so pod specs are
read exactly as the apiserver serves them, with no model (de)serialisation and no
dependence on a particular version of the generated `kubernetes` client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer; `message` is the API's own (e.g. `secrets "x" not found`)."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            self.message = str(json.loads(body)["message"])
        except (ValueError, KeyError, TypeError):
            self.message = f"{status} {reason}"
        super().__init__(f"{status} {reason}: {self.message}")


def api_client_for(server: str, ca_cert: Path, client_cert: Path, client_key: Path) -> Any:
    """An official `kubernetes.client.ApiClient` authenticating with a client certificate
    (for tests that want the generated client)."""
    from kubernetes import client as k8s

    config = k8s.Configuration()
    config.host = server
    config.ssl_ca_cert = str(ca_cert)
    config.cert_file = str(client_cert)
    config.key_file = str(client_key)
    config.verify_ssl = True
    return k8s.ApiClient(config)


class KubeAPI:
    """GET/POST/PATCH/DELETE and watch on API paths, returning decoded JSON dicts."""

    def __init__(
        self,
        server: str,
        ca_cert: Path,
        client_cert: Path,
        client_key: Path,
        *,
        user_agent: str = "localcluster",
        pool_size: int = 16,
    ) -> None:
        self.server = server
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=pool_size,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_cert),
            cert_file=str(client_cert),
            key_file=str(client_key),
        )
        self._headers = {"Accept": JSON, "User-Agent": user_agent}

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        return self.server + path + ("?" + urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = JSON,
        timeout: float = 30.0,
    ) -> Any:
        """One API call; raises ApiError for a non-2xx answer."""
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        response = self._pool.request(
            method,
            self._url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            retries=False,
        )
        if not 200 <= response.status < 300:
            raise ApiError(response.status, response.reason or "", response.data)
        return json.loads(response.data) if response.data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> Any:
        """GET, or None when the object does not exist."""
        try:
            return self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any], *, strategic: bool = False) -> Any:
        content_type = STRATEGIC_MERGE_PATCH if strategic else MERGE_PATCH
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, body=body)

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int, **query: Any
    ) -> WatchStream:
        """Open a watch; iterate the result for events ({"type", "object"}) until the
        server ends it, or close() it from another thread to stop early."""
        params = dict(
            query,
            watch="true",
            resourceVersion=resource_version,
            timeoutSeconds=str(timeout_seconds),
            allowWatchBookmarks="true",
        )
        response = self._pool.request(
            "GET",
            self._url(path, params),
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 30),
            retries=False,
        )
        if response.status != 200:
            body = response.read()
            response.release_conn()
            raise ApiError(response.status, response.reason or "", body)
        return WatchStream(response)

    def close(self) -> None:
        self._pool.clear()


class WatchStream:
    """The events of one watch request, one JSON object per line."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self.close()

    def close(self) -> None:
        """End the watch (safe to call from another thread, and more than once)."""
        with contextlib.suppress(Exception):
            self._response.shutdown()
        with contextlib.suppress(Exception):
            self._response.close()
        with contextlib.suppress(Exception):
            self._response.release_conn()
