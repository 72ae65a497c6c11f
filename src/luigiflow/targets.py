"""Where a task's outputs live, and a Luigi Target that knows it is an MLflow artifact.

A task's outputs are one folder, `<run artifacts>/<TaskName>/`, completed by a manifest written
last: no manifest, no output, whatever else the folder holds. So an exception, Ctrl-C or
`kill -9` in the middle of a task leaves files the next run ignores and replaces.

The run's artifact location is asked of MLflow, never built from `./mlruns`. A local artifact
store is written in place; any other (a tracking server's `mlflow-artifacts:/`) is written to a
local staging folder and uploaded when the task succeeds, the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path

import luigi

from luigiflow.formats import BrokenOutput, file_digests, sha256_file
from luigiflow.names import BROKEN_TAG, CARD, MANIFEST, recorded_manifest_digest
from luigiflow.store import (
    client,
    local_path,
    repository,
    run_artifact_uri,
    staging_root,
    write_atomic,
)

# Manifests of complete task folders seen by this process. Complete outputs never change, so
# this is a cache of what the store holds, not state of a run.
_complete: dict[str, dict] = {}


class TaskFolder:
    """One task's output folder: `<TaskName>/` in a run's artifacts, or a local folder."""

    def __init__(self, run_id: str | None, name: str, folder: Path | None = None) -> None:
        self.run_id, self.name = run_id, name
        if folder is not None:
            self.folder = folder

    @cached_property
    def folder(self) -> Path | None:
        """The local folder, or None when the outputs live in a remote artifact store."""
        root = local_path(run_artifact_uri(str(self.run_id)))
        return root / self.name if root is not None else None

    @classmethod
    def from_source(cls, source: str) -> TaskFolder:
        """A `[PathConfig]` reuse source: `runs:/<run_id>/<path>` or a local folder."""
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            return cls(run_id, path.strip("/"))
        return cls(None, Path(source).name, Path(source))

    def __repr__(self) -> str:
        return f"runs:/{self.run_id}/{self.name}" if self.run_id else str(self.folder)

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    # reading ------------------------------------------------------------------------------
    def manifest(self) -> dict | None:
        """The manifest, or None while the outputs are incomplete.

        Complete outputs never change, so a manifest once found is remembered: Luigi asks
        for completeness several times per task, and each ask costs a request on a server.
        """
        key = repr(self)
        if key in _complete:
            return _complete[key]
        if self.folder is not None:
            path = self.folder / MANIFEST
            if not path.is_file():
                return None
        else:
            listing = repository(str(self.run_id)).list_artifacts(self.name)
            if not any(f.path == f"{self.name}/{MANIFEST}" for f in listing):
                return None
        _complete[key] = manifest = json.loads(self.fetch(MANIFEST).read_text())
        return manifest

    def verify(self, manifest_digest: str | None, fresh: bool = False) -> dict:
        """Check the outputs against their manifest, and the manifest against the digest its
        run recorded (None for a plain folder, which has no run); raise BrokenOutput naming the
        file. On a remote store this downloads every file; `fresh` discards earlier downloads
        first (they prove nothing about the store now), so the verified copy is what is read.
        Returns the manifest."""
        if self.folder is None and fresh:
            shutil.rmtree(self._downloads(), ignore_errors=True)
        raw = self.fetch(MANIFEST).read_bytes()
        if manifest_digest is not None and hashlib.sha256(raw).hexdigest() != manifest_digest:
            raise BrokenOutput(f"{self!r}/{MANIFEST} differs from what its run recorded")
        manifest = json.loads(raw)
        if "files" not in manifest:
            raise BrokenOutput(f"{self!r}/{MANIFEST} records no digests (an older version)")
        for relative, expected in manifest["files"].items():
            path = self.fetch(relative)
            if not path.is_file():
                raise BrokenOutput(f"{self!r}/{relative} is missing")
            if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
                raise BrokenOutput(f"{self!r}/{relative} differs from its manifest")
        return manifest

    def vouched_manifest(self) -> dict:
        """The manifest, checked against the digest its run recorded (the tracking store
        vouches for it); the files it lists are not read."""
        raw = self.fetch(MANIFEST).read_bytes()
        if hashlib.sha256(raw).hexdigest() != self.recorded_digest():
            raise BrokenOutput(f"{self!r}/{MANIFEST} differs from what its run recorded")
        return json.loads(raw)

    def trusted_manifest(self) -> dict:
        """The manifest as far as it can be trusted now: as its run vouches for it, or, for a
        plain folder (which no run vouches for), as the folder holds it."""
        if self.run_id is not None:
            return self.vouched_manifest()
        return json.loads(self.fetch(MANIFEST).read_bytes())

    def recorded_digest(self) -> str | None:
        """The manifest digest the run that made these outputs recorded in the tracking store
        (None for a plain folder, which has no run)."""
        if self.run_id is None:
            return None
        tags = client().get_run(self.run_id).data.tags
        return recorded_manifest_digest(tags, self.name) or ""

    def mark_broken(self, why: str) -> None:
        """Tag outputs that failed verification on their run, so the cache never offers them
        again (a plain folder has no run to tag: it is refused each time it is named)."""
        from mlflow.exceptions import MlflowException

        if self.run_id is None:
            return
        try:
            client().set_tag(self.run_id, BROKEN_TAG.format(self.name), why[:4000])
        except MlflowException:  # a store that forbids it (permissions): the check repeats
            logging.warning("could not mark %s of run %s broken", self.name, self.run_id)

    def has(self, filename: str) -> bool:
        manifest = self.manifest()
        if manifest is None or filename not in manifest.get("outputs", {}).values():
            return False
        return self.folder is None or (self.folder / filename).exists()

    def fetch(self, filename: str) -> Path:
        """A local path to read `filename` from, downloaded once when the store is remote."""
        if self.folder is not None:
            return self.folder / filename
        target = self._downloads() / filename
        if not target.exists():
            from mlflow.artifacts import download_artifacts

            partial = Path(tempfile.mkdtemp(dir=staging_root(), prefix="download-"))
            # By artifact URI, not run id: a `runs:/` download costs extra requests per file
            # (run lookup, logged-model search).
            downloaded = download_artifacts(artifact_uri=self.uri(filename), dst_path=str(partial))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(downloaded, target)  # appear whole or not at all
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def _downloads(self) -> Path:
        return staging_root() / "downloads" / str(self.run_id) / self.name

    def uri(self, filename: str) -> str:
        """The artifact URI of `filename` in this folder (for a local folder: its path)."""
        if self.run_id is None:
            return str((self.folder / filename).resolve())
        return f"{run_artifact_uri(str(self.run_id)).rstrip('/')}/{self.name}/{filename}"

    def fetch_optional(self, filename: str) -> Path | None:
        """Like `fetch`, for a file that may not be there (a card from an older version)."""
        from mlflow.exceptions import MlflowException

        try:
            path = self.fetch(filename)
        except (OSError, MlflowException):
            return None
        return path if path.exists() else None


class TaskWriter:
    """Writes one task's outputs so that they count only once all of them are there."""

    def __init__(self, destination: TaskFolder) -> None:
        self.destination = destination
        if destination.folder is not None:
            self.folder = destination.folder
        else:
            self.folder = staging_root() / "staging" / str(destination.run_id) / destination.name
        self.written: dict[Path, dict] = {}  # digests taken while writing, by path

    def begin(self) -> None:
        """Clear whatever an interrupted attempt left, so no stale file joins the new outputs."""
        _complete.pop(repr(self.destination), None)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.written.clear()

    def discard(self) -> None:
        """Drop what was written (staged outputs of a task finished elsewhere meanwhile)."""
        if not self.destination.is_local:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.written.clear()

    def path(self, filename: str) -> Path:
        path = self.folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, manifest: dict) -> str:
        """Write the manifest last, with the size and digest of every file (and, for a remote
        store, upload everything before it). Returns the manifest's own digest, which the run
        records in the tracking store so that the artifact store alone cannot vouch for it."""
        missing = [f for f in manifest["outputs"].values() if not (self.folder / f).exists()]
        if missing:
            raise RuntimeError(
                f"{self.destination.name} finished without writing {', '.join(missing)}"
            )
        files = file_digests(self.folder, self.written)
        text = json.dumps({**manifest, "files": files}, indent=2, default=str)
        write_atomic(self.folder / MANIFEST, text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if self.destination.is_local:
            return digest
        name, store = self.destination.name, repository(str(self.destination.run_id))
        for entry in sorted(self.folder.iterdir()):
            if entry.name == MANIFEST:
                continue
            if entry.is_dir():
                store.log_artifacts(str(entry), f"{name}/{entry.name}")
            else:
                store.log_artifact(str(entry), name)
        store.log_artifact(str(self.folder / MANIFEST), name)
        shutil.rmtree(self.folder, ignore_errors=True)
        return digest


def copy_outputs(source: TaskFolder, destination: TaskFolder) -> str:
    """Copy a task's complete outputs into another run, as atomically as the task wrote them;
    returns the new manifest's digest."""
    manifest = source.manifest()
    if manifest is None:
        raise RuntimeError(f"{source!r} holds no complete outputs")
    writer = TaskWriter(destination)
    writer.begin()
    for filename in manifest["outputs"].values():
        copy = shutil.copytree if source.fetch(filename).is_dir() else shutil.copy2
        copy(source.fetch(filename), writer.path(filename))
    card = source.fetch_optional(CARD)
    if card is not None:
        shutil.copy2(card, writer.path(CARD))
    return writer.commit({**manifest, "copied_from": repr(source)})


class ArtifactTarget(luigi.Target):
    """One named output of a task; it exists once the task's manifest lists it."""

    def __init__(self, folder: TaskFolder, filename: str) -> None:
        self.folder, self.filename = folder, filename

    def exists(self) -> bool:
        return self.folder.has(self.filename)

    def local_path(self) -> Path:
        return self.folder.fetch(self.filename)

    def uri(self) -> str:
        return self.folder.uri(self.filename)

    def __repr__(self) -> str:
        return f"{self.folder!r}/{self.filename}"
