"""What is inside an input table, checked before the run: rows as wide as the header, ids that
never repeat, numbers where numbers are expected, a target whose values suit the problem type.

Each of these slips past pandas without a word, or fails far from its cause: a ragged row
shifts its values into the wrong columns or stops a task's read, a repeated id reaches the
submission as many times as it repeats, and a stray word in a column of numbers turns it into
a column of text (one-hot encoded) or into missing values (imputed). Found here, each names
the file, the lines and the values, and the way on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SHOWN = 5  # values (and lines) quoted in a message; the rest are counted
INFINITE = ("inf", "infinity")  # what pandas reads as an infinite number, signs aside
NUMERIC_SHARE = 0.9  # a column this share of whose values are numbers is meant to be numbers


class ContentError(ValueError):
    """What is wrong inside a file; `key` names the `[Dataset]` key that may change it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


def check_rows(text: str, path: Path) -> None:
    """Every row has as many fields as the header (blank lines aside, as pandas skips them);
    the csv module's own reader, so quoted commas and line breaks count as pandas counts them."""
    reader = csv.reader(io.StringIO(text))
    width = len(next(reader, []))
    ragged: list[tuple[int, int]] = []
    for row in reader:
        if row and len(row) != width:
            ragged.append((reader.line_num, len(row)))
    if ragged:
        line, fields = ragged[0]
        more = (
            f" ({len(ragged)} such lines: {_lines([n for n, _ in ragged])})" if ragged[1:] else ""
        )
        raise ContentError(
            f"{path} line {line} has {fields} fields where the header has {width}{more}: "
            "a comma inside a value must be quoted"
        )


def check_unique(table: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """An id column names each row, once."""
    for column in columns:
        blank = table[column].isna() | (table[column].astype("string").str.strip() == "")
        if blank.any():
            count, lines = int(blank.sum()), _lines(_line_numbers(table[column][blank]))
            plural = "s" * (count != 1)
            raise ContentError(
                f"{path} column '{column}': every row needs an id, and "
                f"{count} row{plural} have none (line{plural} {lines})",
                "id_column",
            )
        repeated = table[column][table[column].duplicated(keep=False)]
        if len(repeated):
            values = repeated.drop_duplicates()
            shown = ", ".join(
                f"'{value}' (lines {_lines(_line_numbers(repeated[repeated == value]))})"
                for value in values.head(SHOWN)
            )
            more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
            raise ContentError(
                f"{path} column '{column}': an id must be unique, and {len(values)} "
                f"value{'s' * (len(values) != 1)} repeat: {shown}{more}",
                "id_column",
            )


def check_numeric(table: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Columns that must hold numbers hold nothing else (missing values aside): no text, and
    no infinity, which no estimator takes."""
    for column in columns:
        words = _not_numbers(table[column])
        if len(words):
            infinite = words.str.lower().str.lstrip("+-").isin(INFINITE).all()
            kind = "infinite values" if infinite else "text"
            way = (
                "Clean it in Preprocessor (src/tasks/preprocessor.py)"
                if infinite
                else _ways_on(column)
            )
            raise ContentError(
                f"{path} column '{column}' is a column of numbers with {kind} in it: "
                f"{_quoted(words)}. {way}",
                "numeric_columns",
            )


def check_mostly_numeric(table: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """A column read as text whose values are nearly all numbers is a column of numbers with
    a few stray values, not a category of its own: say so, rather than one-hot encode it."""
    for column in columns:
        present = table[column].dropna()
        present = present[present.astype(str).str.strip() != ""]
        words = _not_numbers(present)
        if len(present) and 0 < len(words) <= (1 - NUMERIC_SHARE) * len(present):
            raise ContentError(
                f"{path} column '{column}' holds numbers but for {len(words)} "
                f"value{'s' * (len(words) != 1)}: {_quoted(words)}. {_ways_on(column)}",
                "categorical_columns",
            )


def check_target(text: str, path: Path, column: str, problem: str) -> None:
    """The target column's values must suit the problem type: present on every row; two
    values for a binary target and at least two for a multiclass one (a split stratifies by
    them, a classifier needs two classes); numbers for a regression."""
    import pandas as pd

    raw = pd.read_csv(io.StringIO(text), usecols=[column], dtype=str, keep_default_na=False)
    values = raw[column].str.strip()
    # What pandas reads as missing (NA, null, nan...) is missing here too, as the tasks see it.
    missing = pd.read_csv(io.StringIO(text), usecols=[column], dtype=str)[column].isna()
    missing |= values == ""
    where = f"{path} column '{column}': a {problem} target"

    def first(bad: pd.Series, what: str) -> str:
        line, value = int(bad.index[0]) + 2, bad.iloc[0]
        found = f"line {line} has no value" if value == "" else f"line {line} has '{value}'"
        found += " (read as missing)" if value != "" and what.endswith("row") else ""
        return f"{what}; {found}" + (f" ({len(bad)} such rows)" if len(bad) > 1 else "")

    if missing.any():
        problem_text = first(values[missing], "needs a value on every row")
        raise ContentError(f"{where} {problem_text}", "target_column")
    if problem == "regression":
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
        if len(bad):
            raise ContentError(f"{where} {first(bad, 'is a number')}", "problem_type")
        return
    counts = values.value_counts()
    if len(counts) < 2:
        only = counts.index[0]
        raise ContentError(
            f"{where} needs at least two classes; all rows are {only}", "target_column"
        )
    if problem == "multiclass" and len(counts) == 2:
        two = f'{where} has only two classes: set [Dataset] problem_type = "binary"'
        raise ContentError(two, "problem_type")
    if problem == "binary" and len(counts) > 2:
        found = ", ".join(
            f"'{value}' ({n} row{'s' * (n != 1)})" for value, n in counts.head(5).items()
        )
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        raise ContentError(
            f"{where} takes two values, not {len(counts)}: {found}{more} "
            '(or set [Dataset] problem_type = "multiclass")',
            "problem_type",
        )


def _not_numbers(values: pd.Series) -> pd.Series:
    """The values (as text) that are present and no finite number."""
    import numpy as np
    import pandas as pd

    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")  # missing: NaN
    return text[present & ~np.isfinite(numbers)]


def _ways_on(column: str) -> str:
    return (
        f"Clean it in Preprocessor (src/tasks/preprocessor.py), or declare '{column}' "
        "categorical in [Dataset] categorical_columns"
    )


def _quoted(values: pd.Series) -> str:
    shown = ", ".join(
        f"'{value}' (line {line})"
        for value, line in zip(values.head(SHOWN), _line_numbers(values.head(SHOWN)), strict=True)
    )
    return shown + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


def _line_numbers(values: pd.Series) -> list[int]:
    """A table's row labels as the file's lines: the header is line 1."""
    return [int(label) + 2 for label in values.index]


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:SHOWN])
    return shown + (f" and {len(numbers) - SHOWN} more" if len(numbers) > SHOWN else "")
