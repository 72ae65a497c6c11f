"""What outputs are, byte for byte: the size and sha256 of every file of a task's folder, as
its manifest records them, and the error for outputs that no longer match."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path

from luigiflow.names import MANIFEST


class BrokenOutput(Exception):
    """Outputs that differ from what their manifest (or their run) recorded: never used."""


class DigestingFile(io.FileIO):
    """A file opened for writing that digests what passes through it, so that a file written
    through it needs no second read to be recorded."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "wb")
        self._sha256, self._size = hashlib.sha256(), 0

    def write(self, data) -> int:  # any bytes-like object
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):  # a raw write may be partial; callers need not check
            done += super().write(view[done:])
        self._sha256.update(view)
        self._size += len(view)
        return len(view)

    def digest(self) -> dict:
        return {"size": self._size, "sha256": self._sha256.hexdigest()}


def file_digests(folder: Path, known: dict[Path, dict] | None = None) -> dict[str, dict]:
    """Size and sha256 of every file below `folder` but the manifest, by relative path.

    `known`: digests taken while writing, by path, with the file's `mtime_ns`; used as they
    are while the file's size and modification time still match, read again otherwise."""
    found, known = {}, known or {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST:
            continue
        status, written = path.stat(), known.get(path)
        if written and (written["size"], written["mtime_ns"]) == (
            status.st_size,
            status.st_mtime_ns,
        ):
            found[relative] = {"size": written["size"], "sha256": written["sha256"]}
        else:
            found[relative] = {"size": status.st_size, "sha256": sha256_file(path)}
    return found


def written_digest(handle: DigestingFile, path: Path) -> dict:
    """What `handle` wrote, with the modification time of `path` (the file once renamed)."""
    return {**handle.digest(), "mtime_ns": os.stat(path).st_mtime_ns}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checked_bytes(path: Path, digest: Mapping, label: str) -> bytes:
    """The bytes of `path`, if they are the ones `digest` (size, sha256) records."""
    if not path.is_file():
        raise BrokenOutput(f"{label} is missing")
    data = path.read_bytes()
    if len(data) != digest["size"] or hashlib.sha256(data).hexdigest() != digest["sha256"]:
        raise BrokenOutput(f"{label} differs from its manifest")
    return data
