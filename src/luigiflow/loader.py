"""The project's one model loader: every task, the registry, `src/serve.py` and `make serve`
load a model through it, never through MLflow's own loader.

MLflow's pyfunc loader reads the file `python_function.model_path` names and trusts the types
the MLmodel lists, so whoever writes a model folder (or forges its manifest, its run's tag and
its Logged Model together) could make it run a command. Here the MLmodel only has to look like
what `formats.write_sklearn_model` writes, the skops file its sklearn flavor names is loaded
with the project's trusted types, every file is checked as it is read against the making task's
manifest, and the trees of tree models are checked before anything predicts with them. At
worst a forgery gives a wrong model, never a command, a crash or a hang; anything else about it
is refused as an UntrustedModel, which reuse passes over like any broken output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from luigiflow.formats import BrokenOutput, checked_bytes

# Types a skops model may need beyond those skops trusts itself (scikit-learn's estimators and
# the like). The project decides; the list a model folder carries is never believed.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")  # the latter: every tree model
TRUSTED_TYPES_VARIABLE = "LUIGIFLOW_TRUSTED_TYPES"  # more, comma-separated, e.g. in .env


class UntrustedModel(BrokenOutput):
    """A model whose loading could run code the project did not allow: never loaded, and
    passed over by reuse like any other output that fails verification."""


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
    """The model in `folder` as MLflow's pyfunc model (its `predict` enforces the signature),
    once every file is found as `digests` (the making task's manifest, by path in the folder)
    records it; raise UntrustedModel (or BrokenOutput) saying why not."""
    meta, data = check_model(folder, digests, label)
    try:
        return _loaded(meta, data, label)
    except BrokenOutput:
        raise
    except Exception as error:  # a forgery that skops or MLflow cannot make sense of
        raise UntrustedModel(f"{label}: not a model this project can load ({error})") from None


def _loaded(meta: dict, data: dict[str, bytes], label: str):
    import skops.io
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

    estimator = skops.io.loads(data[skops_file(meta, label)], trusted=sorted(trusted_types()))
    if not callable(getattr(estimator, "predict", None)):
        raise UntrustedModel(f"{label}: holds a {type(estimator).__name__}, not an estimator")
    check_trees(estimator, label)
    model = Model.from_dict(meta)
    model.get_input_schema()  # a signature that does not parse is refused now, not at predict
    _warn_of_other_versions(label, data.get("requirements.txt", b""))
    return PyFuncModel(model, SklearnModel(estimator))


def check_model(
    folder: Path, digests: Mapping[str, Mapping], label: str
) -> tuple[dict, dict[str, bytes]]:
    """Refuse a model folder that the loader must not touch: an entry that is not a plain file
    or folder (a symlink may point anywhere), a file not among `digests` or not as recorded
    (each one is read and checked; all are small but the model), an MLmodel unlike what
    `write_sklearn_model` writes (`skops_file`), or a skops file needing types outside
    `trusted_types()`, whatever its MLmodel says it trusts. Returns the MLmodel and the
    files' bytes, as checked."""
    found = set()
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise UntrustedModel(f"{label}/{name} is not a plain file; not loaded")
        if path.is_file():
            found.add(name)
    if stray := sorted(found - set(digests)):
        raise BrokenOutput(f"{label}/{stray[0]} is not in its manifest")
    data = {n: checked_bytes(folder / n, d, f"{label}/{n}") for n, d in digests.items()}
    if "MLmodel" not in data:
        raise UntrustedModel(f"{label}: no MLmodel; not a model of this project")
    meta = _mlmodel(data["MLmodel"], label)
    file = skops_file(meta, label)
    if file not in data:
        raise BrokenOutput(f"{label}/{file} is not in its manifest")
    needed = _untrusted_types(data[file], label) - trusted_types()
    if needed:
        raise UntrustedModel(
            f"{label}: needs types this project does not trust: {', '.join(sorted(needed))}. "
            f"If you trust them, add them to {TRUSTED_TYPES_VARIABLE} in .env (comma-separated)"
        )
    return meta, data


def _mlmodel(text: bytes, label: str) -> dict:
    """The MLmodel as plain data: safe YAML, a mapping, and no key that would shadow one of
    MLflow's `Model` methods (`Model.from_dict` sets every key as an attribute)."""
    import yaml
    from mlflow.models import Model

    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UntrustedModel(f"{label}: its MLmodel is not plain YAML ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise UntrustedModel(f"{label}: its MLmodel is not a model's description; not loaded")
    if shadowing := sorted(k for k in meta if callable(getattr(Model, str(k), None))):
        raise UntrustedModel(f"{label}: its MLmodel sets {shadowing[0]!r}; not loaded")
    return meta


def _untrusted_types(data: bytes, label: str) -> set[str]:
    import skops.io

    try:
        return set(skops.io.get_untrusted_types(data=data))
    except Exception as error:  # not a skops file skops can read
        raise UntrustedModel(f"{label}: not a skops file this project can read ({error})") from None


def skops_file(meta: Mapping, label: str) -> str:
    """The skops file of an MLmodel that can load no other way: MLflow's scikit-learn flavor
    and nothing else (no code, no `data`, no other loader), its pyfunc `model_path` the very
    file its sklearn flavor names, in the folder itself."""
    flavors = meta.get("flavors") or {}
    if set(flavors) != {"python_function", "sklearn"}:
        raise UntrustedModel(f"{label}: flavors {sorted(map(str, flavors))}; only scikit-learn")
    pyfunc, sklearn = flavors["python_function"], flavors["sklearn"]
    if not isinstance(pyfunc, dict) or not isinstance(sklearn, dict):
        raise UntrustedModel(f"{label}: its flavors are not a model's description; not loaded")
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


def _warn_of_other_versions(label: str, requirements: bytes) -> None:
    """Warn, as MLflow would on load, of a model saved with other versions of the libraries it
    pins (read from its checked requirements.txt). MLflow's own check first maps every
    installed package to its modules: a second or more in each fresh process, such as every
    task a Luigi worker forks."""
    from importlib.metadata import PackageNotFoundError, version

    for line in requirements.decode(errors="replace").splitlines():
        name, pinned, wanted = line.partition(";")[0].strip().partition("==")
        if not pinned:
            continue
        try:
            found = version(name)
        except (PackageNotFoundError, ValueError):
            found = "nothing"
        if found != wanted:
            logging.getLogger("luigiflow").warning(
                "the model %s was saved with %s %s; %s is installed here", label, name, wanted,
                found,
            )  # fmt: skip


def check_trees(estimator: Any, label: str) -> None:
    """Refuse a tree whose nodes a prediction could not walk safely. scikit-learn's trees
    follow their child and feature indices without bounds checks (skops itself trusts no
    `Tree` for that reason): a crafted one reads out of bounds or loops forever. A tree that
    scikit-learn grew numbers every child after its parent, so checking that is enough."""
    for tree in _trees(estimator, set(), 0):
        nodes = tree.node_count
        left, right, feature = tree.children_left, tree.children_right, tree.feature
        index = np.arange(nodes)
        leaf = left == -1
        good = (
            len(left) == len(right) == len(feature) == nodes
            and tree.value.shape[0] == nodes
            and bool(np.all(leaf == (right == -1)))
            and bool(np.all((left > index) & (left < nodes) | leaf))
            and bool(np.all((right > index) & (right < nodes) | leaf))
            and bool(np.all((feature >= 0) & (feature < tree.n_features) | leaf))
        )
        if not good:
            raise UntrustedModel(f"{label}: holds a tree that scikit-learn could not have grown")


def _trees(value: Any, seen: set[int], depth: int):
    """Every scikit-learn `Tree` inside a loaded estimator (pipelines, ensembles, and their
    attributes, to a bounded depth)."""
    from sklearn.tree._tree import Tree

    if id(value) in seen or depth > 20:
        return
    seen.add(id(value))
    if isinstance(value, Tree):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _trees(item, seen, depth + 1)
    elif isinstance(value, list | tuple) or (
        isinstance(value, np.ndarray) and value.dtype == object
    ):
        items = value.ravel() if isinstance(value, np.ndarray) else value
        for item in items:
            yield from _trees(item, seen, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from _trees(vars(value), seen, depth + 1)
