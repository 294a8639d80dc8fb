"""Names inside an artifact: what a manifest entry or an S3 key below an artifact's prefix
may be, so that no name can point outside the artifact's directory or alias another.

A name is a '/'-separated relative path with no empty, '.' or '..' segment, no backslash
and no NUL: exactly one file below the directory, the same on every filesystem.
"""

from __future__ import annotations


def relative_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe name inside an artifact, or None when it is."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    if name.startswith("/"):
        return "is an absolute path"
    if "\\" in name:
        return "holds a backslash"
    segments = name.split("/")
    if ".." in segments:
        return "has a '..' segment, which climbs out of its directory"
    if "." in segments or "" in segments:
        return "has an empty or '.' segment"
    return None
