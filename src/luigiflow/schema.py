"""The kind of model a registered name holds: the columns its versions take, what they predict.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from luigiflow.names import SCHEMA_INPUTS_TAG, SCHEMA_PROBLEM_TAG, SCHEMA_TARGET_TAG

if TYPE_CHECKING:
    import pandas as pd

    from luigiflow.inputs import Dataset

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
