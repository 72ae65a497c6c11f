"""What outputs are, byte for byte: the size and sha256 of every file of a task's folder, as
its manifest records them, and the error for outputs that no longer match."""

from __future__ import annotations

import hashlib
from pathlib import Path

from luigiflow.names import MANIFEST


class BrokenOutput(Exception):
    """Outputs that differ from what their manifest (or their run) recorded: never used."""


def file_digests(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file below `folder` but the manifest, by relative path."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != MANIFEST:
            found[relative] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
