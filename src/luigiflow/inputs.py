"""What the run reads from outside: the input files the tasks name, checked before the run,
and what the data is, `[Dataset]` in luigi.toml completed from `train.csv` where it is silent.

`id_column` and `target_column` are required; the problem type and the feature columns are
inferred when absent, and the choice is printed (the dry run shows it) and recorded with the
run, so that every task reads one resolved description instead of constants, and a changed
target or feature list reruns everything (the values enter every task's fingerprint).
Every problem is an InputError naming the section and key to change; the plan makes it a
ConfigError of the config file (exit status 2, no run).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from luigiflow import contents

if TYPE_CHECKING:
    import pandas as pd

SECTION = "Dataset"
INPUT_SECTION, INPUT_KEY = "PathConfig", "input"  # where the input folder is configured
TRAIN_FILE = "train.csv"  # in [PathConfig] input: what the dataset is read from
PROBLEM_TYPES = ("binary", "multiclass", "regression")
MAX_CLASSES = 20  # integers or strings with at most this many distinct values: classes
KEYS = ("id_column", "target_column", "problem_type", "numeric_columns", "categorical_columns")


class InputError(ValueError):
    """What is wrong with the input files, naming the section and key to change, and the
    names a misspelt one may have meant."""

    def __init__(
        self,
        message: str,
        section: str = INPUT_SECTION,
        key: str | None = INPUT_KEY,
        choices: Iterable[str] = (),
        name: str | None = None,
    ) -> None:
        self.section, self.key, self.choices, self.name = section, key, tuple(choices), name
        super().__init__(message)


class DatasetError(InputError):
    """What is wrong with `[Dataset]` against the data, naming the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message, SECTION, key)


@dataclass(frozen=True)
class InputFile:
    """An external file a task reads from the input folder, with the columns it must have
    and, for training data, the target column and the problem type its values must suit
    (checked before the run, `check_files`)."""

    filename: str
    columns: tuple[str, ...] = ()
    encoding: str = "utf-8"
    target: str = ""
    problem: str = "binary"  # a problem type of [Dataset], which the target's values must suit
    unique: tuple[str, ...] = ()  # columns whose values name one row each (an id)
    numeric: tuple[str, ...] = ()  # columns that must hold numbers and nothing else


class ReadsInputs(Protocol):
    """What `check_files` asks of a task."""

    task_family: str

    def input_files(self) -> dict[str, InputFile]: ...

    def significant_params(self) -> dict[str, str]: ...


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
            raise DatasetError(key, _no_column(str(written[key]), list(train.columns)))
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
        if list(columns).count(column) > 1:
            raise DatasetError(key, f"lists '{column}' twice")
        if column in reserved:
            raise DatasetError(key, f"'{column}' is the id or the target, not a feature")
        if column not in train.columns:
            raise DatasetError(key, _no_column(column, list(train.columns)))


def _no_column(column: str, header: list[str]) -> str:
    """train.csv lacks `column`: with a hint when its header shows why."""
    spaced = [name for name in header if name.strip() == column]
    if spaced:
        return f"train.csv has no column '{column}', but '{spaced[0]}': mind the spaces"
    if len(header) == 1 and any(mark in header[0] for mark in "\t;|"):
        return f"train.csv has no column '{column}': it reads as one column; separate with commas"
    return f"train.csv has no column '{column}'"


def read_train(path) -> pd.DataFrame:
    """The training file, read once before the run to resolve `[Dataset]` (pyarrow's reader:
    a million rows in a fraction of a second)."""
    import pandas as pd

    try:
        return pd.read_csv(path, engine="pyarrow")
    except Exception:  # what pyarrow cannot parse, pandas' own reader may
        return pd.read_csv(path)


def resolve_dataset(
    written: Mapping[str, object], input_dir: Path, project_root: Path
) -> tuple[Dataset | None, pd.DataFrame | None]:
    """`[Dataset]` completed from train.csv, with train.csv as read for it; (None, None)
    without a `[Dataset]`. A column read as text that is nearly all numbers is refused unless
    `categorical_columns` names it."""
    if not written:
        return None, None
    path = _regular_file(input_dir, TRAIN_FILE, project_root)
    text = _decoded(path, "utf-8")
    _header(text, path)  # readable, with rows
    _checked(contents.check_rows, text, path)
    train = read_train(path)
    dataset = resolve(written, train)
    if "categorical_columns" in dataset.inferred:
        _checked(contents.check_mostly_numeric, train, path, dataset.categorical_columns)
    return dataset, train


def check_files(task: ReadsInputs, input_dir: Path, project_root: Path) -> None:
    """The input files of one task: regular files in the project or the input folder, readable
    in their encoding, with a header, rows as wide as it, the columns the task needs, and
    what `InputFile` says of their values."""
    for input_file in task.input_files().values():
        path = _regular_file(input_dir, input_file.filename, project_root)
        text = _decoded(path, input_file.encoding)
        header = _header(text, path)
        _checked(contents.check_rows, text, path)
        for column in input_file.columns:
            if column not in header:
                params = task.significant_params()
                key = next(
                    (k for k, v in params.items() if f'"{column}"' in v or v == column), None
                )
                message = f"{path} has no column '{column}'"
                raise InputError(message, task.task_family, key, choices=header, name=column)
        if input_file.target:
            _checked(contents.check_target, text, path, input_file.target, input_file.problem)
        if input_file.unique or input_file.numeric:
            _check_values(text, path, input_file)


def _check_values(text: str, path: Path, input_file: InputFile) -> None:
    import pandas as pd

    columns = sorted({*input_file.unique, *input_file.numeric})
    table = pd.read_csv(io.StringIO(text), usecols=columns, dtype=str)
    _checked(contents.check_unique, table, path, input_file.unique)
    _checked(contents.check_numeric, table, path, input_file.numeric)


def _checked(check, *args) -> None:
    try:
        check(*args)
    except contents.ContentError as error:
        raise (
            DatasetError(error.key, str(error)) if error.key else InputError(str(error))
        ) from None


def _regular_file(input_dir: Path, filename: str, project_root: Path) -> Path:
    """An input file is a regular file, and a link only to one inside the input folder or the
    project: never a way to read (or digest into a run's records) a file from elsewhere."""
    path = input_dir / filename
    if not path.exists():
        raise InputError(f"{filename} not found in {input_dir}")
    target = path.resolve()
    if not target.is_file():
        raise InputError(f"{path} is not a regular file")
    if not any(target.is_relative_to(p.resolve()) for p in (input_dir, project_root)):
        raise InputError(f"{path} links to {target}, outside the input folder and the project")
    return path


def _decoded(path: Path, encoding: str) -> str:
    """The whole file as text (read once for every check): it must decode in its encoding,
    or the line of the first bad byte is named. A byte-order mark is dropped."""
    data = path.read_bytes()
    try:
        return data.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{path} line {line}: not valid {encoding} ({error.reason}); save it as UTF-8, "
            "or name its encoding in the task's InputFile(encoding=...)"
        ) from None


def _header(text: str, path: Path) -> list[str]:
    """The column names of a CSV file's text, which must hold at least one row."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path} is empty")
    if len(lines) == 1:
        raise InputError(f"{path} has a header but no rows")
    names = next(csv.reader(lines[:1]))
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # pandas would read the second as `Age.1`, which nobody wrote
        raise InputError(
            f"{path}: the header names '{twice[0]}' twice; each column needs its own name"
        )
    return names
