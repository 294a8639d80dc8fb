"""Images are never pulled by the local node agent: a container's command runs in the
project's own environment. One registry behaviour is simulated so tests can exercise it:
an image whose registry host ends in `.invalid` (a TLD reserved to never resolve, RFC 2606)
fails to pull, exactly as it would on a real node, with kubelet's reasons
(ErrImagePull, then ImagePullBackOff) and messages."""

from __future__ import annotations


def registry_host(image: str) -> str:
    """The registry host of an image reference ("" for Docker Hub short names)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.split(":", 1)[0]
    return ""


def simulated_pull_error(image: str) -> str | None:
    """The pull error a real node would report for this image, or None if it "pulls"."""
    host = registry_host(image)
    if host.endswith(".invalid"):
        return (
            f'failed to pull and unpack image "{image}": failed to resolve reference '
            f'"{image}": failed to do request: Head "https://{host}/v2/": '
            f"dial tcp: lookup {host}: no such host"
        )
    return None
