"""The Model Registry: one version per trained model, found again by its fingerprint.

A model is registered from the artifact folder its task wrote (no copy, no pickle), tagged with
that task's fingerprint. Registering the same fingerprint again finds the existing version
instead of adding a duplicate, then points the alias at it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from luigiflow import formats, models
from luigiflow.formats import UntrustedModel
from luigiflow.names import MODEL_FINGERPRINT_TAG as FINGERPRINT_TAG
from luigiflow.targets import TaskFolder, client, run_artifact_uri

if TYPE_CHECKING:
    from luigiflow.task import PipelineTask

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
NAME = re.compile(r"^[A-Za-z0-9][\w.\- ]*$")


def register(
    task: PipelineTask,
    output: str,
    name: str,
    alias: str,
    description: str,
    tags: dict[str, str],
) -> dict:
    """Register `task`'s model output under `name` (once per fingerprint) and set `alias`."""
    from mlflow.exceptions import MlflowException

    fingerprint = task.fingerprint()["digest"]
    target = task.output()[output]
    model_id = ((target.folder.manifest() or {}).get("models") or {}).get(output)
    source = models.uri(model_id) if model_id else target.uri()  # the Logged Model, if any
    try:
        client().create_registered_model(
            name,
            description="Versions are registered by the pipeline's Register task, once per "
            "model fingerprint (tag luigiflow.fingerprint); each says how it did on the "
            "validation criteria.",
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    query = f"name = '{name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'"
    same = client().search_model_versions(query)
    new = not same
    if new:
        created = client().create_model_version(
            name,
            source=source,
            run_id=target.folder.run_id,
            model_id=model_id,
            tags={FINGERPRINT_TAG: fingerprint, **{f"luigiflow.{k}": v for k, v in tags.items()}},
            description=description,
        )
        # Another runner may have registered the same model meanwhile: the oldest version
        # stays, the others are removed by whoever made them.
        same = [*client().search_model_versions(query), created]
    version = min(same, key=lambda v: int(v.version))
    if new and version.version != created.version:
        client().delete_model_version(name, created.version)
        new = False
    kept = _alias_kept(name, alias, version, task.context.promotion)
    if not kept:
        client().set_registered_model_alias(name, alias, version.version)
    return {
        "version": int(version.version),
        "new": new,
        "uri": f"models:/{name}/{version.version}" if kept else f"models:/{name}@{alias}",
        "source": version.source,
        "fingerprint": fingerprint,
        "alias_moved": not kept,
        "alias_kept_because": kept,
    }


def _alias_kept(name: str, alias: str, version, promotion: dict[str, str]) -> str:
    """Why the alias stays where it is ("" when it moves to `version`): a sweep moves it
    only to a model better on its metric than the alias's holder (`promotion`: metric and
    direction), unless told to move it always."""
    holder = _version(name, alias)
    if not promotion or promotion.get("promote") == "always" or holder is None:
        return ""
    if holder.version == version.version:
        return ""
    metric, higher = promotion["metric"], promotion["direction"] == "higher"
    new = promotion.get("value", _metric(metric, version.run_id))
    # The holder's value where it was judged: the run that registered it, else the model's.
    judged = [holder.tags.get("luigiflow.registered_by_run")]  # Register's tags= say so
    old = next(
        (v for run in [*judged, holder.run_id] if run and (v := _metric(metric, run)) is not None),
        None,
    )
    if new is None or old is None:
        return ""  # nothing to compare the holder on: the validated winner takes the alias
    if (new > old) if higher else (new < old):
        return ""
    return f"version {holder.version} has {metric} {old:.4g}, this one {new:.4g}"


def load_model(uri: str):
    """A registered or Logged Model (`models:/name@alias`, `models:/name/3`, `models:/m-...`)
    as pyfunc, through the project's loader (`formats.load_model`): each file checked, as it
    is read, against the manifest of the task that made it, and no code run from it."""
    if model_id := models.model_id_of(uri):
        return models.load(model_id)
    match = MODEL_URI.fullmatch(uri)
    version = _version(match["name"], match["alias"], match["version"]) if match else None
    if version is None:
        raise LookupError(f"{uri}: no such registered model version")
    if models.model_id_of(version.source):
        return load_model(version.source)
    base = run_artifact_uri(version.run_id).rstrip("/") + "/"
    family, _, filename = version.source.removeprefix(base).partition("/")
    if not version.source.startswith(base) or not filename or ".." in filename.split("/"):
        raise UntrustedModel(f"{uri}: version {version.version} is not a task output of its run")
    folder = TaskFolder(version.run_id, family)
    manifest = folder.verify(folder.recorded_digest(), fresh=True)
    digests = formats.folder_digests(manifest["files"], filename)
    return formats.load_model(folder.fetch(filename), digests, f"{folder!r}/{filename}")


def describe(uri: str) -> str:
    """Which registered version a `models:/` URI names right now, e.g. `titanic version 3`."""
    match = MODEL_URI.fullmatch(uri)
    if not match or models.model_id_of(uri):  # a Logged Model never points elsewhere
        return uri
    version = _version(match["name"], match["alias"], match["version"])
    if version is None:
        return "not registered"
    return f"{version.name} version {version.version} (run {version.run_id})"


def _metric(metric: str, run_id: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(run_id).data.metrics.get(metric)
    except MlflowException:  # the run was deleted
        return None


def alias_version(name: str, alias: str) -> int | None:
    """The version `alias` points at now, or None."""
    version = _version(name, alias)
    return None if version is None else int(version.version)


def _version(name: str, alias: str | None, number: str | None = None):
    """The model version named by alias or number, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            return client().get_model_version_by_alias(name, alias)
        return client().get_model_version(name, str(number))
    except MlflowException:
        return None


def uri_problems(**uris: str) -> dict[str, str]:
    """Config check: each value must be `models:/<name>@<alias>`, `models:/<name>/<version>` or
    a Logged Model's `models:/m-<id>`."""
    return {
        key: f"'{uri}' is not models:/<name>@<alias>, models:/<name>/<version> or models:/m-<id>"
        for key, uri in uris.items()
        if not MODEL_URI.fullmatch(uri) and not models.model_id_of(uri)
    }


def name_problems(**names: str) -> dict[str, str]:
    """Config check: registry names and aliases are letters, digits, '_', '-', '.' and spaces."""
    return {
        key: f"'{value}' is not a valid registry name (letters, digits, _ - . and spaces)"
        for key, value in names.items()
        if not NAME.fullmatch(value)
    }
