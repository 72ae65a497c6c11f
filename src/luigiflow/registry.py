"""The Model Registry: one version per trained model, found again by its fingerprint.

A model is registered from the artifact folder its task wrote (no copy, no pickle), tagged with
that task's fingerprint and its schema (`models.ModelSchema`). Registering the same fingerprint
again finds the existing version instead of adding a duplicate, then points the alias at it.
A name holds one kind of model: a model whose schema differs from the alias's holder's is
refused, before the run (`compare_with_holder`, asked by the plan) and as it registers, unless
the configuration says to replace it (`RegisteredModel.replace_schema`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from luigiflow import loader, models
from luigiflow.inputs import SECTION as DATASET_SECTION
from luigiflow.inputs import Dataset, DatasetError
from luigiflow.loader import UntrustedModel
from luigiflow.models import ModelSchema, from_signature
from luigiflow.names import MODEL_FINGERPRINT_TAG as FINGERPRINT_TAG
from luigiflow.names import REGISTERED_BY_RUN, SCHEMA_REPLACED_TAG, VERSION_TAG, Registration
from luigiflow.store import client, run_artifact_uri
from luigiflow.targets import TaskFolder

if TYPE_CHECKING:
    from luigiflow.task import PipelineTask, RegisteredModel


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
NAME = re.compile(r"^[A-Za-z0-9][\w.\- ]*$")


class SchemaMismatch(Exception):
    """The model is another kind of model than the one the alias's holder is."""


@dataclass(frozen=True)
class Comparison:
    """A model about to be registered, against the holder of the alias it would take."""

    holder: str = ""  # `models:/titanic@champion (version 3)`; empty when the alias is free
    differences: list[str] = field(default_factory=list)  # empty: the same kind of model
    note: str = ""  # why the holder could not be compared, when it could not


def register(
    task: PipelineTask,
    output: str,
    destination: RegisteredModel,
    description: str,
    tags: dict[str, str],
) -> Registration:
    """Register `task`'s model output under `destination.name` (once per fingerprint) and set
    its alias; raise SchemaMismatch for another kind of model than the alias's holder (the
    plan refused it before the run, unless the holder changed since)."""
    from mlflow.exceptions import MlflowException

    name, alias = destination.name, destination.alias
    schema_tags = _checked_schema_tags(task, output, destination)
    fingerprint = task.fingerprint()["digest"]
    target = task.output()[output]
    model_id = ((target.folder.manifest() or {}).get("models") or {}).get(output)
    source = models.uri(model_id) if model_id else target.uri()  # the Logged Model, if any
    try:
        client().create_registered_model(
            name,
            description="Versions are registered by the pipeline's Register task, once per "
            f"model fingerprint (tag {FINGERPRINT_TAG}); each says how it did on the "
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
            tags={
                FINGERPRINT_TAG: fingerprint,
                **schema_tags,
                **{VERSION_TAG.format(k): v for k, v in tags.items()},
            },
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
    return Registration(
        version=int(version.version),
        new=new,
        uri=f"models:/{name}/{version.version}" if kept else f"models:/{name}@{alias}",
        source=version.source,
        fingerprint=fingerprint,
        alias_moved=not kept,
        alias_kept_because=kept,
    )


def _checked_schema_tags(
    task: PipelineTask, output: str, destination: RegisteredModel
) -> dict[str, str]:
    """The version tags of the model's schema, once it is found to be the kind of model the
    alias's holder is, or allowed to replace it (which is recorded too)."""
    schema = model_schema(task, output)
    comparison = compare_with_holder(destination.name, destination.alias, schema)
    if comparison.differences and not destination.replace_schema:
        raise SchemaMismatch(refusal(comparison, destination))
    tags = schema.tags()
    if comparison.differences:
        replaced = f"{comparison.holder}: {'; '.join(comparison.differences)}"
        tags[SCHEMA_REPLACED_TAG] = f"replace_schema = true; this model replaced {replaced}"
    return tags


def compare_with_holder(
    name: str, alias: str, schema: ModelSchema | Callable[[], ModelSchema]
) -> Comparison:
    """Compare `schema` (or what the callable makes, only when there is a holder to compare
    with) with that of the version `alias` points at. A holder registered before schemas were
    recorded is compared through its model's signature and the `[Dataset]` its run logged;
    one whose signature cannot be read is not compared, and the note says so."""
    version = _version(name, alias)
    if version is None:
        return Comparison()
    holder = f"models:/{name}@{alias} (version {version.version})"
    old = ModelSchema.from_tags(version.tags) or _unrecorded_schema(version)
    if old is None:
        note = f"{holder} records no schema and has no readable signature: not compared"
        return Comparison(holder, note=note)
    new = schema() if callable(schema) else schema
    return Comparison(holder, old.differences(new))


class Refused(Exception):
    """A registration refused before the run, naming the section that says where it goes."""

    def __init__(self, message: str, section: str) -> None:
        super().__init__(message)
        self.section = section


def check_before_run(tasks: list[PipelineTask], dataset: Dataset | None, train) -> list[str]:
    """Tasks that will register a model (in this run, or for a sweep's winner) must give the
    registered name the kind of model it holds: what the Trainer would make of this
    `[Dataset]` and train.csv is compared with the alias's holder. Returns the notes to say;
    Refused when it is another kind of model and `replace_schema` is not set."""
    notes: list[str] = []
    if dataset is None:  # no columns to tell the model from before the run: registering checks
        return notes
    for task in tasks:
        destination = task.registers()
        if destination is None:
            continue
        comparison = compare_with_holder(
            destination.name, destination.alias, lambda: models.expected(dataset, train)
        )
        notes += [comparison.note] if comparison.note else []
        if comparison.differences and not destination.replace_schema:
            raise Refused(refusal(comparison, destination), destination.section)
    return notes


def refusal(comparison: Comparison, destination: RegisteredModel) -> str:
    """Why the model is refused, and the two ways on."""
    section = destination.section
    return (
        f"{comparison.holder} is another kind of model than this run registers: "
        f"{'; '.join(comparison.differences)}. Moving @{destination.alias} to this run's model "
        f"would break whoever calls models:/{destination.name}@{destination.alias} (make "
        f"serve, batch scoring). Register it under another [{section}] model_name, or set "
        f"[{section}] replace_schema = true to replace the holder all the same"
    )


def _unrecorded_schema(version) -> ModelSchema | None:
    """The schema of a version that recorded none: its model's signature, with the problem
    type and target its run logged as `[Dataset]` params (None where not logged)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        signature = Model.load(f"models:/{version.name}/{version.version}").signature
    except Exception:  # no MLmodel where the version points, or no store behind it
        return None
    if signature is None or signature.inputs is None:
        return None
    try:
        params = client().get_run(version.run_id).data.params if version.run_id else {}
    except MlflowException:  # the run is gone: the columns alone are compared
        params = {}
    return from_signature(
        signature.inputs.to_dict(),
        params.get(f"{DATASET_SECTION}.problem_type"),
        params.get(f"{DATASET_SECTION}.target_column"),
    )


def model_schema(task: PipelineTask, output: str) -> ModelSchema:
    """The schema of `task`'s model output as saved: its signature's inputs, and the problem
    type and target of the dataset it was trained on (None without `[Dataset]`)."""
    from mlflow.models import Model

    target = task.output()[output]
    signature = Model.load(str(target.folder.fetch(f"{target.filename}/MLmodel"))).signature
    inputs = signature.inputs.to_dict() if signature and signature.inputs else []
    try:
        dataset = task.dataset
    except DatasetError:
        return from_signature(inputs, None, None)
    return from_signature(inputs, dataset.problem_type, dataset.target_column)


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
    judged = [holder.tags.get(VERSION_TAG.format(REGISTERED_BY_RUN))]  # Register's tags=
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
    as pyfunc, through the project's loader (`loader.load_model`): each file checked, as it
    is read, against the manifest of the task that made it, and no code run from it."""
    if model_id := models.model_id_of(uri):
        return models.load(model_id)
    match = MODEL_URI.fullmatch(uri)
    version = _version(match["name"], match["alias"], match["version"]) if match else None
    if version is None:
        raise LookupError(f"{uri}: no such registered model version")
    if models.model_id_of(version.source):
        return load_model(version.source)
    if not version.run_id:
        raise UntrustedModel(f"{uri}: version {version.version} was made by no run")
    base = run_artifact_uri(version.run_id).rstrip("/") + "/"
    family, _, filename = version.source.removeprefix(base).partition("/")
    parts = [family, *filename.split("/")]
    if not version.source.startswith(base) or not filename or {"", ".", ".."} & set(parts):
        raise UntrustedModel(f"{uri}: version {version.version} is not a task output of its run")
    folder = TaskFolder(version.run_id, family)
    manifest = folder.verify(folder.recorded_digest(), fresh=True)
    digests = loader.folder_digests(manifest["files"], filename)
    return loader.load_model(folder.fetch(filename), digests, f"{folder!r}/{filename}")


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
