"""How outputs are written and read, and what they are byte for byte.

The file name's suffix decides the format. Tables are Parquet (CSV where a person or Kaggle
expects it), small values JSON, models MLflow models. Each file is written under a temporary
name and renamed, so it appears whole or not at all.

What outputs are, byte for byte: the size and sha256 of every file of a task's folder, as
its manifest records them (taken while a file is written, so that it needs no second read),
and the error for outputs that no longer match.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def write(path: Path, value: Any) -> dict:
    """A DataFrame as Parquet or CSV, or JSON-able values as JSON, as the file name says.
    Returns the file's size and sha256, taken while writing (see `file_digests`)."""
    if path.suffix not in (".parquet", ".csv", ".json"):
        raise ValueError(f"{path.name}: no writer for '{path.suffix}' files; use output_path()")
    tmp = path.with_name(f".{path.name}.tmp")
    with DigestingFile(tmp) as raw:
        if path.suffix == ".parquet":
            value.to_parquet(raw, index=False)
        else:
            with io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", newline="") as text:
                if path.suffix == ".csv":
                    value.to_csv(text, index=False)
                else:
                    text.write(json.dumps(value, indent=2, default=str))
    tmp.replace(path)
    return written_digest(raw, path)


def is_table(path: Path) -> bool:
    return path.suffix in (".parquet", ".csv")


def read(path: Path, encoding: str = "utf-8") -> Any:
    """An input file of the user's (a table as a DataFrame, JSON as Python values)."""
    return parse(path.name, path.read_bytes(), encoding)


def read_checked(path: Path, digest: Mapping, label: str, encoding: str = "utf-8") -> Any:
    """An output file as its manifest recorded it: the bytes parsed are the bytes checked, so
    a file replaced after an earlier check (while planning, while a slow task ran) is refused
    naming `label`, never used."""
    return parse(path.name, checked_bytes(path, digest, label), encoding)


def parse(name: str, data: bytes, encoding: str = "utf-8") -> Any:
    if name.endswith(".json"):
        return json.loads(data)
    import pandas as pd

    if name.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    if name.endswith(".csv"):
        return pd.read_csv(io.BytesIO(data), encoding=encoding)
    raise ValueError(f"{name}: no reader for '{Path(name).suffix}' files; use input_path()")


def warm_up() -> None:
    """Do once, before Luigi forks a process per task, what saving a model does on first use in
    each process: MLflow maps every installed package to its modules to check the model's
    requirements (a second or more, in every forked task that saves a model otherwise)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()  # no public way to do it ahead
    _pip_requirements()


def write_sklearn_model(model: Any, example: Any, path: Path) -> None:
    """A scikit-learn model in MLflow's format, with its signature and an input example.

    The format is skops, which loads without running arbitrary code (a pickle from a shared
    tracking server could run anything); it trusts exactly the types this model is made of.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        pip_requirements=_pip_requirements(),  # inferring them costs seconds
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
    )


@functools.cache
def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "pandas", "numpy", "skops")
    return [f"{name}=={version(name)}" for name in names]
