"""What the data is: `[Dataset]` in luigi.toml, completed from `train.csv` where it is silent.

`id_column` and `target_column` are required; the problem type and the feature columns are
inferred when absent, and the choice is printed (the dry run shows it) and recorded with the
run, so that every task reads one resolved description instead of constants, and a changed
target or feature list reruns everything (the values enter every task's fingerprint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SECTION = "Dataset"
TRAIN_FILE = "train.csv"  # in [PathConfig] input: what the dataset is read from
PROBLEM_TYPES = ("binary", "multiclass", "regression")
MAX_CLASSES = 20  # integers or strings with at most this many distinct values: classes
KEYS = ("id_column", "target_column", "problem_type", "numeric_columns", "categorical_columns")


class DatasetError(ValueError):
    """What is wrong with `[Dataset]` against the data, naming the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class Dataset:
    """The resolved description of the data; `inferred` names what was not written."""

    id_column: str
    target_column: str
    problem_type: str
    numeric_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    inferred: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, values: Mapping[str, object]) -> Dataset:
        """The section as a run recorded it (`as_config`)."""
        return cls(
            str(values["id_column"]),
            str(values["target_column"]),
            str(values["problem_type"]),
            tuple(values["numeric_columns"]),  # type: ignore[arg-type]
            tuple(values["categorical_columns"]),  # type: ignore[arg-type]
        )

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric_columns, *self.categorical_columns)

    @property
    def is_classification(self) -> bool:
        return self.problem_type != "regression"

    def as_config(self) -> dict[str, object]:
        """The section as a run records it: every key, inferred ones included."""
        values = asdict(self)
        values.pop("inferred")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def describe(self) -> str:
        """One line for the terminal: `regression on SalePrice (inferred), 34 numeric and 12
        categorical features (inferred)`."""
        inferred = " (inferred)"
        kind = self.problem_type + (inferred if "problem_type" in self.inferred else "")
        columns = "numeric_columns" in self.inferred or "categorical_columns" in self.inferred
        return (
            f"{kind} on {self.target_column}, {len(self.numeric_columns)} numeric and "
            f"{len(self.categorical_columns)} categorical features" + (inferred if columns else "")
        )


def problem_type_of(target: pd.Series) -> str:
    """Two distinct values: binary; integers or strings with at most MAX_CLASSES distinct
    values: multiclass; numbers otherwise: regression. Strings with more values are no target
    this template can learn."""
    import pandas as pd

    values = target.dropna()
    distinct = values.nunique()
    if distinct == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    whole = numeric and bool((values == values.round()).all())
    if distinct <= MAX_CLASSES and (whole or not numeric):
        return "multiclass"
    if numeric:
        return "regression"
    raise DatasetError(
        "problem_type",
        f"the target has {distinct} distinct text values: more than {MAX_CLASSES} classes "
        "(set problem_type, or give the target as numbers for a regression)",
    )


def resolve(written: Mapping[str, object], train: pd.DataFrame) -> Dataset:
    """`[Dataset]` as written, checked against the training table and completed from it."""
    for key in ("id_column", "target_column"):
        if not isinstance(written.get(key), str) or not written.get(key):
            raise DatasetError(key, f"required: the name of the {key.split('_')[0]} column")
        if written[key] not in train.columns:
            raise DatasetError(key, f"train.csv has no column '{written[key]}'")
    id_column, target = str(written["id_column"]), str(written["target_column"])
    if id_column == target:
        raise DatasetError("target_column", "the target cannot be the id column")
    inferred: list[str] = []
    problem = written.get("problem_type")
    if problem is None:
        problem, inferred = problem_type_of(train[target]), ["problem_type"]
    elif problem not in PROBLEM_TYPES:
        raise DatasetError("problem_type", f"expected one of {', '.join(PROBLEM_TYPES)}")
    numeric, categorical = _columns(written, train, (id_column, target), inferred)
    return Dataset(id_column, target, str(problem), numeric, categorical, tuple(inferred))


def _columns(written, train: pd.DataFrame, reserved: tuple[str, ...], inferred: list[str]):
    """The feature columns as written, or every other column of train.csv: numbers numeric,
    anything else categorical."""
    import pandas as pd

    given = {k: written.get(k) for k in ("numeric_columns", "categorical_columns")}
    for key, columns in given.items():
        if columns is not None:
            _check_columns(key, columns, train, reserved)
    rest = [c for c in train.columns if c not in reserved]
    numbers = [c for c in rest if pd.api.types.is_numeric_dtype(train[c])]
    if given["numeric_columns"] is None:
        taken = set(given["categorical_columns"] or ())
        given["numeric_columns"] = [c for c in numbers if c not in taken]
        inferred.append("numeric_columns")
    if given["categorical_columns"] is None:
        taken = set(given["numeric_columns"])
        given["categorical_columns"] = [c for c in rest if c not in numbers and c not in taken]
        inferred.append("categorical_columns")
    both = set(given["numeric_columns"]) & set(given["categorical_columns"])
    if both:
        raise DatasetError("categorical_columns", f"{sorted(both)} are numeric_columns too")
    if not given["numeric_columns"] and not given["categorical_columns"]:
        raise DatasetError("numeric_columns", "no feature column left")
    return tuple(given["numeric_columns"]), tuple(given["categorical_columns"])


def _check_columns(key: str, columns: object, train: pd.DataFrame, reserved) -> None:
    if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
        raise DatasetError(key, "expected a list of column names")
    for column in columns:
        if column in reserved:
            raise DatasetError(key, f"'{column}' is the id or the target, not a feature")
        if column not in train.columns:
            raise DatasetError(key, f"train.csv has no column '{column}'")


def read_train(path) -> pd.DataFrame:
    """The training file, read once before the run to resolve `[Dataset]` (pyarrow's reader:
    a million rows in a fraction of a second)."""
    import pandas as pd

    try:
        return pd.read_csv(path, engine="pyarrow")
    except Exception:  # what pyarrow cannot parse, pandas' own reader may
        return pd.read_csv(path)
