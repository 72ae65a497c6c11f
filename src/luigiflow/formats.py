"""How outputs are written and read: the file name's suffix decides the format.

Tables are Parquet (CSV where a person or Kaggle expects it), small values JSON, models MLflow
models. Each file is written under a temporary name and renamed, so it appears whole or not
at all.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from luigiflow.digests import DigestingFile, written_digest

# Types a skops model may need beyond those skops trusts itself (scikit-learn's estimators and
# the like). The project decides; the list a model folder carries is never believed.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")  # the latter: every tree model
TRUSTED_TYPES_VARIABLE = "LUIGIFLOW_TRUSTED_TYPES"  # more, comma-separated, e.g. in .env


class UntrustedModel(Exception):
    """A model whose loading could run code the project did not allow."""


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
    """A model folder as pyfunc, a table as a DataFrame, JSON as Python values."""
    if path.is_dir():
        import mlflow.pyfunc

        _warn_of_other_versions(path)
        return mlflow.pyfunc.load_model(str(path), suppress_warnings=True)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, encoding=encoding)
    raise ValueError(f"{path.name}: no reader for '{path.suffix}' files; use input_path()")


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


def check_model(path: Path) -> None:
    """Refuse a model folder whose loading could run code the project did not allow: another
    loader than MLflow's scikit-learn flavor, code shipped with it, a pickle, or a skops file
    that needs types outside `trusted_types()` (whatever its MLmodel says it trusts)."""
    import yaml

    flavors = (yaml.safe_load((path / "MLmodel").read_text()) or {}).get("flavors", {})
    pyfunc, sklearn = flavors.get("python_function", {}), flavors.get("sklearn", {})
    if pyfunc.get("loader_module") != "mlflow.sklearn" or pyfunc.get("code") or sklearn.get("code"):
        raise UntrustedModel(f"{path}: not a plain scikit-learn model of MLflow's; not loaded")
    form, file = sklearn.get("serialization_format"), str(sklearn.get("pickled_model", ""))
    if form != "skops":
        raise UntrustedModel(
            f"{path}: serialized as {form}, which can run any code when loaded; "
            "only skops models are loaded"
        )
    if Path(file).name != file or not (path / file).is_file():
        raise UntrustedModel(f"{path}: its model file {file!r} is not a file of the folder")
    import skops.io

    needed = set(skops.io.get_untrusted_types(file=str(path / file))) - trusted_types()
    if needed:
        raise UntrustedModel(
            f"{path}: needs types this project does not trust: {', '.join(sorted(needed))}. "
            f"If you trust them, add them to {TRUSTED_TYPES_VARIABLE} in .env (comma-separated)"
        )
