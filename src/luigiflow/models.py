"""The model of record as an MLflow 3 Logged Model (`models:/m-...`), so that MLflow's
model-centred views (the experiment's Models tab, the model's page with its params, metrics
and lineage) show it, and the registry, batch scoring and serving load it by that URI.

The task still writes the model into its own folder, where the manifest records every
file's digest; when the task commits, the folder's model is copied into the Logged Model,
which turns READY once the manifest is written (FAILED if the attempt fails). Loading by
`models:/m-...` checks each of the Logged Model's files, as it is read, against the digests of
the manifest of the task that made it (the manifest itself against the digest its run
recorded), so a Logged Model whose files were changed in the artifact store is refused like
any other output; reuse checks them all before a run, and passes a changed one over.

A model's schema is the kind of model it is: the columns it takes, what it predicts.

A registered name is a promise to whoever calls it (`make serve`, a `models:/<name>@<alias>`
in batch scoring): rows with these columns give predictions of this target. A version trained
on other data breaks that promise however good it is, so before an alias moves to it the two
are compared (`registry.compare_with_holder`). A model's schema is its signature's input
columns (the features the Trainer fits on: `[Dataset]` numeric and categorical columns, typed
as the Preprocessor types them), its problem type and its target column.

Column types are compared by kind (a number, text, true or false...), not by MLflow's exact
type: MLflow types a column of numbers `long` or `double` after the rows it is shown (one
missing value makes it `double`; a categorical column is judged on the input example's five
rows alone), so the same kind of data can give either.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luigiflow import formats, loader
from luigiflow.formats import BrokenOutput
from luigiflow.names import (
    OUTPUT_TAG,
    SCHEMA_INPUTS_TAG,
    SCHEMA_PROBLEM_TAG,
    SCHEMA_TARGET_TAG,
    TASK_TAG,
    estimator_class,
)
from luigiflow.store import client, local_path, staging_root
from luigiflow.targets import ArtifactTarget, TaskFolder

if TYPE_CHECKING:
    import pandas as pd

    from luigiflow.inputs import Dataset

LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")
# MLflow's tags of the run that the Models tab shows as the model's "Logged from".
SOURCE_TAGS = ("mlflow.source.name", "mlflow.source.git.commit", "mlflow.source.git.branch")
_downloaded: dict[str, Path] = {}  # Logged Models of a remote store, by id


def create(run_id: str, family: str, output: str, params: Mapping[str, str]) -> str:
    """A PENDING Logged Model of the run for `family`'s output `output`, with the task's
    parameters, named after its estimator's class (else `<Task>-<output>`); returns its id
    (`m-...`)."""
    run = client().get_run(run_id)
    source = {k: v for k, v in run.data.tags.items() if k in SOURCE_TAGS}
    model = client().create_logged_model(
        run.info.experiment_id,
        name=estimator_class(params) or f"{family}-{output}",
        source_run_id=run_id,
        params={k: str(v) for k, v in params.items()},
        tags={**source, TASK_TAG: family, OUTPUT_TAG: output},
        model_type="sklearn",
    )
    return model.model_id


def upload(run_id: str, model_id: str, folder: Path) -> None:
    """Copy the model folder into the Logged Model and list it among the run's outputs (the
    run page's "Logged models" reads those)."""
    from mlflow.entities import LoggedModelOutput

    client().log_model_artifacts(model_id, str(folder))
    client().log_outputs(run_id, [LoggedModelOutput(model_id, 0)])


def finalize(model_id: str, ready: bool) -> None:
    client().finalize_logged_model(model_id, "READY" if ready else "FAILED")


def uri(model_id: str) -> str:
    return f"models:/{model_id}"


def model_id_of(model_uri: str) -> str | None:
    """`models:/m-abc` -> `m-abc`; None for another kind of URI."""
    match = LOGGED_MODEL_URI.fullmatch(model_uri)
    return match[1] if match else None


def load(model_id: str):
    """The Logged Model as pyfunc, through the project's loader: each file checked as it is
    read against the manifest of the task that made it (see `loader.load_model`)."""
    folder, expected = files(model_id)
    return loader.load_model(folder, expected, uri(model_id))


def verify(model_id: str) -> None:
    """Check the Logged Model as the loader would, without loading it (as reuse does before a
    run): every file against its task's manifest, and the MLmodel and skops file fit to load;
    raise BrokenOutput (UntrustedModel) naming what is wrong."""
    folder, expected = files(model_id)
    loader.check_model(folder, expected, uri(model_id))


def verify_outputs(folder: TaskFolder, manifest_digest: str | None) -> dict:
    """What reuse checks before a run: every file against the manifest (the manifest against
    the digest its run recorded, see `TaskFolder.verify`), every model folder as the loader
    would take it, and the files of every Logged Model the manifest records. Raises
    BrokenOutput (UntrustedModel for a model the loader refuses); returns the manifest."""
    manifest = folder.verify(manifest_digest, fresh=True)
    files = manifest["files"]
    for output in manifest.get("outputs", {}).values():
        if f"{output}/MLmodel" in files:
            digests = loader.folder_digests(files, output)
            loader.check_model(folder.fetch(output), digests, f"{folder!r}/{output}")
    if folder.run_id is not None:  # a plain folder has no run to vouch for a model id
        for model_id in (manifest.get("models") or {}).values():
            verify(model_id)
    return manifest


def files(model_id: str) -> tuple[Path, dict[str, dict]]:
    """A local copy of the Logged Model's files, and the digests they must have: those of the
    output of the task that made it, as that task's manifest records them (the manifest itself
    checked against the digest its run recorded). The files are not read here."""
    from mlflow.entities import LoggedModelStatus

    model = client().get_logged_model(model_id)
    if model.status != LoggedModelStatus.READY:
        raise BrokenOutput(f"{uri(model_id)} is {model.status}: its task did not finish")
    family, output = model.tags.get(TASK_TAG), model.tags.get(OUTPUT_TAG)
    if not family or not output or not model.source_run_id:
        raise BrokenOutput(f"{uri(model_id)} was not made by a pipeline task")
    folder = TaskFolder(model.source_run_id, family)
    manifest = folder.vouched_manifest()
    if manifest.get("models", {}).get(output) != model_id:
        raise BrokenOutput(f"{folder!r} does not record {uri(model_id)} as its {output}")
    expected = loader.folder_digests(manifest["files"], manifest["outputs"][output])
    return _local_copy(model_id, model.artifact_location), expected


def _local_copy(model_id: str, location: str) -> Path:
    """The Logged Model's folder in place on a local store; on a remote one, downloaded once
    per process (what is read from it is checked as it is read)."""
    if (target := local_path(location)) is not None:
        return target
    if model_id in _downloaded:
        return _downloaded[model_id]
    from mlflow.artifacts import download_artifacts

    target = staging_root() / "models" / model_id
    partial = Path(tempfile.mkdtemp(dir=staging_root(), prefix="model-"))
    downloaded = download_artifacts(artifact_uri=location, dst_path=partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    Path(downloaded).rename(target)
    shutil.rmtree(partial, ignore_errors=True)
    _downloaded[model_id] = target
    return target


def read_verified(target: ArtifactTarget, name: str) -> Any:
    """Output `name` of a task, checked as it is read (see `PipelineTask.load`). Outputs that
    fail the check are tagged broken on their run, so that no later run is offered them."""
    folder = target.folder
    try:
        manifest = folder.trusted_manifest()
        model_id = (manifest.get("models") or {}).get(name)
        if model_id and folder.run_id is not None:  # the Logged Model, by the vouched id
            return load(model_id)
        files, path, label = manifest.get("files") or {}, target.local_path(), repr(target)
        if path.is_dir():
            return loader.load_model(path, loader.folder_digests(files, target.filename), label)
        if target.filename not in files:
            raise BrokenOutput(f"{label} is not in its manifest")
        return formats.read_checked(path, files[target.filename], label)
    except BrokenOutput as error:
        folder.mark_broken(str(error))
        raise


# What kind of model it is ----------------------------------------------------------------
ANY = "any"  # a column whose example rows held no value: MLflow says nothing of its type
KINDS = {
    "long": "number",
    "integer": "number",
    "double": "number",
    "float": "number",
    "string": "text",
    "boolean": "true or false",
}
LISTED = 5  # column names shown per difference; the rest are counted


@dataclass(frozen=True)
class ModelSchema:
    """What a model takes and predicts. None: not known (a version registered before
    schemas were recorded, made by a run that did not log `[Dataset]`)."""

    inputs: Mapping[str, str] | None  # column -> MLflow type, in the signature's order
    problem_type: str | None
    target: str | None

    def tags(self) -> dict[str, str]:
        """The schema as version tags (`from_tags` reads them back); unknown parts left out."""
        values = {
            SCHEMA_INPUTS_TAG: None if self.inputs is None else json.dumps(dict(self.inputs)),
            SCHEMA_PROBLEM_TAG: self.problem_type,
            SCHEMA_TARGET_TAG: self.target,
        }
        return {tag: value for tag, value in values.items() if value is not None}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ModelSchema | None:
        """The schema a version recorded; None when it recorded none."""
        if SCHEMA_INPUTS_TAG not in tags:
            return None
        inputs = json.loads(tags[SCHEMA_INPUTS_TAG])
        return cls(inputs, tags.get(SCHEMA_PROBLEM_TAG), tags.get(SCHEMA_TARGET_TAG))

    def differences(self, new: ModelSchema) -> list[str]:
        """What `new` (this run's model) changes, in words (empty: the same kind of model).
        A part either side does not know is not compared."""
        found = []
        for what, old_value, new_value in (
            ("problem type", self.problem_type, new.problem_type),
            ("target", self.target, new.target),
        ):
            if None not in (old_value, new_value) and old_value != new_value:
                found.append(f"{what} {old_value} (this run: {new_value})")
        if self.inputs is not None and new.inputs is not None:
            found += _column_differences(self.inputs, new.inputs)
        return found

    def describe(self) -> str:
        """`binary on Survived from Pclass (number), Sex (text), ...` (as far as known)."""
        what = f"{self.problem_type or 'a model'} on {self.target or 'an unknown target'}"
        if self.inputs is None:
            return what
        columns = [f"{name} ({kind_of(kind)})" for name, kind in self.inputs.items()]
        return f"{what} from {_listed(columns)}"


def kind_of(mlflow_type: str) -> str:
    """`long` and `double` -> `number`, `string` -> `text`; other types stay as they are."""
    return KINDS.get(mlflow_type, mlflow_type)


def _column_differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    found = []
    missing = [name for name in old if name not in new]
    added = [name for name in new if name not in old]
    if missing:
        found.append(f"columns {_listed(missing)} not in this run")
    if added:
        found.append(f"columns {_listed(added)} new in this run")
    for name in old:
        was, now = kind_of(old[name]), kind_of(new.get(name, ANY))
        if ANY not in (was, now) and was != now:
            found.append(f"column {name} a {was} (this run: a {now})")
    return found


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def from_signature(
    inputs: Iterable[Mapping[str, object]], problem_type: str | None, target: str | None
) -> ModelSchema:
    """A schema from a model's signature inputs as MLflow writes them (`[{"name": "Age",
    "type": "double", ...}]`)."""
    columns = {str(spec.get("name")): str(spec.get("type", ANY)) for spec in inputs}
    return ModelSchema(columns, problem_type, target)


def expected(dataset: Dataset, train: pd.DataFrame) -> ModelSchema:
    """The schema of a model trained on `train` (train.csv as the plan reads it), known before
    the run: the feature columns in the Trainer's order, numeric ones as numbers (whole
    numbers when nothing is missing, as pandas reads them; true or false stays so), the others
    as the text the Preprocessor keeps them as, unless they hold numbers."""
    import pandas as pd

    inputs: dict[str, str] = {}
    for column in dataset.numeric_columns:
        values = train[column]
        if not pd.api.types.is_bool_dtype(values):
            values = pd.to_numeric(values, errors="coerce")
        inputs[column] = _mlflow_type(values)
    for column in dataset.categorical_columns:
        values = train[column]
        numbers = pd.api.types.is_numeric_dtype(values)  # text read from a CSV file stays text
        inputs[column] = _mlflow_type(values) if numbers else "string"
    return ModelSchema(inputs, dataset.problem_type, dataset.target_column)


def _mlflow_type(values: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "long"
    return "double"
