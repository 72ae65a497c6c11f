"""How outputs are written and read: the file name's suffix decides the format.

Tables are Parquet (CSV where a person or Kaggle expects it), small values JSON, models MLflow
models. Each file is written under a temporary name and renamed, so it appears whole or not
at all.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from luigiflow.digests import BrokenOutput, DigestingFile, written_digest

# Types a skops model may need beyond those skops trusts itself (scikit-learn's estimators and
# the like). The project decides; the list a model folder carries is never believed.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")  # the latter: every tree model
TRUSTED_TYPES_VARIABLE = "LUIGIFLOW_TRUSTED_TYPES"  # more, comma-separated, e.g. in .env


class UntrustedModel(BrokenOutput):
    """A model whose loading could run code the project did not allow: never loaded, and
    passed over by reuse like any other output that fails verification."""


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


def checked_bytes(path: Path, digest: Mapping, label: str) -> bytes:
    """The bytes of `path`, if they are the ones `digest` (size, sha256) records."""
    if not path.is_file():
        raise BrokenOutput(f"{label} is missing")
    data = path.read_bytes()
    if len(data) != digest["size"] or hashlib.sha256(data).hexdigest() != digest["sha256"]:
        raise BrokenOutput(f"{label} differs from its manifest")
    return data


def warm_up() -> None:
    """Do once, before Luigi forks a process per task, what saving a model does on first use in
    each process: MLflow maps every installed package to its modules to check the model's
    requirements (a second or more, in every forked task that saves a model otherwise)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()  # no public way to do it ahead
    _pip_requirements()


def _warn_of_other_versions(model: Path) -> None:
    """Warn, as MLflow would on load, of a model saved with other versions of the libraries it
    pins. MLflow's own check first maps every installed package to its modules: a second or
    more in each fresh process, such as every task a Luigi worker forks."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = model / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    for line in lines:
        name, pinned, wanted = line.partition(";")[0].strip().partition("==")
        if not pinned:
            continue
        try:
            found = version(name)
        except PackageNotFoundError:
            found = "nothing"
        if found != wanted:
            logging.getLogger("luigiflow").warning(
                "the model in %s was saved with %s %s; %s is installed here", model, name, wanted,
                found,
            )  # fmt: skip


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


def trusted_types() -> set[str]:
    extra = os.environ.get(TRUSTED_TYPES_VARIABLE, "")
    return {*TRUSTED_TYPES, *(name.strip() for name in extra.split(",") if name.strip())}


class SklearnModel:
    """What MLflow's `PyFuncModel` calls on a scikit-learn model this project loaded."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, data: Any, params: dict | None = None) -> Any:
        return self.estimator.predict(data)

    def get_raw_model(self) -> Any:
        return self.estimator


def load_model(folder: Path, digests: Mapping[str, Mapping], label: str):
    """The project's one model loader: every task, the registry, `src/serve.py` and
    `make serve` load through it, never through MLflow's own loader.

    MLflow's pyfunc loader reads the file `python_function.model_path` names and trusts the
    types the MLmodel lists, so whoever writes a model folder (or forges its manifest, its run's
    tag and its Logged Model together) could make it run a command. Here the skops file the
    sklearn flavor names is loaded with the project's trusted types, once `check_model` found
    the folder fit; the bytes loaded are the bytes checked. At worst a forgery gives a wrong
    model, never a command. Returns MLflow's pyfunc model (its `predict` enforces the
    signature)."""
    import skops.io
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

    meta, data = check_model(folder, digests, label)
    estimator = skops.io.loads(data, trusted=sorted(trusted_types()))
    _warn_of_other_versions(folder)
    return PyFuncModel(Model.from_dict(meta), SklearnModel(estimator))


def check_model(folder: Path, digests: Mapping[str, Mapping], label: str) -> tuple[dict, bytes]:
    """Refuse a model folder that the loader must not touch: a file not among `digests` (the
    making task's manifest, by path in the folder) or not as recorded (each one is read and
    checked, all small but the model), an MLmodel unlike what
    `write_sklearn_model` writes (`skops_file`), or a skops file needing types outside
    `trusted_types()`, whatever its MLmodel says it trusts. Returns the MLmodel and the skops
    file's bytes, as checked."""
    import skops.io
    import yaml

    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if stray := sorted(found - set(digests)):
        raise BrokenOutput(f"{label}/{stray[0]} is not in its manifest")
    data = {n: checked_bytes(folder / n, d, f"{label}/{n}") for n, d in digests.items()}
    if "MLmodel" not in data:
        raise UntrustedModel(f"{label}: no MLmodel; not a model of this project")
    meta = yaml.safe_load(data["MLmodel"])
    meta = meta if isinstance(meta, dict) else {}
    file = skops_file(meta, label)
    if file not in data:
        raise BrokenOutput(f"{label}/{file} is not in its manifest")
    needed = set(skops.io.get_untrusted_types(data=data[file])) - trusted_types()
    if needed:
        raise UntrustedModel(
            f"{label}: needs types this project does not trust: {', '.join(sorted(needed))}. "
            f"If you trust them, add them to {TRUSTED_TYPES_VARIABLE} in .env (comma-separated)"
        )
    return meta, data[file]


def skops_file(meta: Mapping, label: str) -> str:
    """The skops file of an MLmodel that can load no other way: MLflow's scikit-learn flavor
    and nothing else (no code, no `data`, no other loader), its pyfunc `model_path` the very
    file its sklearn flavor names, in the folder itself."""
    flavors = meta.get("flavors") or {}
    pyfunc, sklearn = flavors.get("python_function") or {}, flavors.get("sklearn") or {}
    if set(flavors) != {"python_function", "sklearn"}:
        raise UntrustedModel(f"{label}: flavors {sorted(flavors)}; only scikit-learn loads")
    if pyfunc.get("loader_module") != "mlflow.sklearn" or "data" in pyfunc:
        raise UntrustedModel(f"{label}: not a plain scikit-learn model of MLflow's; not loaded")
    if pyfunc.get("code") or sklearn.get("code"):
        raise UntrustedModel(f"{label}: ships code; not loaded")
    form = sklearn.get("serialization_format")
    if form != "skops":
        raise UntrustedModel(
            f"{label}: serialized as {form}, which can run any code when loaded; "
            "only skops models are loaded"
        )
    file = str(sklearn.get("pickled_model", ""))
    if Path(file).name != file or file in ("", ".", ".."):
        raise UntrustedModel(f"{label}: its model file {file!r} is not a file of the folder")
    if pyfunc.get("model_path") != file:
        raise UntrustedModel(
            f"{label}: python_function.model_path {pyfunc.get('model_path')!r} is not the "
            f"sklearn flavor's {file!r}; not loaded"
        )
    return file


def folder_digests(files: Mapping[str, Mapping], folder: str) -> dict[str, Mapping]:
    """The digests of a folder output's files (`model/MLmodel` ...), by path inside it."""
    prefix = f"{folder.rstrip('/')}/"
    return {k.removeprefix(prefix): v for k, v in files.items() if k.startswith(prefix)}
