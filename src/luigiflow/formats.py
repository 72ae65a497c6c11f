"""How outputs are written and read: the file name's suffix decides the format.

Tables are Parquet (CSV where a person or Kaggle expects it), small values JSON, models MLflow
models. Each file is written under a temporary name and renamed, so it appears whole or not
at all.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from luigiflow.digests import DigestingFile, checked_bytes, written_digest


def write(path: Path, value: Any) -> dict:
    """A DataFrame as Parquet or CSV, or JSON-able values as JSON, as the file name says.
    Returns the file's size and sha256, taken while writing (see `digests.file_digests`)."""
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
