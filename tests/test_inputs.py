"""What the run reads from outside: `[Dataset]` and the input files, checked before the run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from luigiflow.inputs import (
    Dataset,
    DatasetError,
    InputError,
    InputFile,
    check_target,
    problem_type_of,
    resolve,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1, 0], "binary"),
        (["yes", "no", "no"], "binary"),
        ([1.0, 2.0, 1.0, None], "binary"),
        ([1, 2, 3, 3, 2], "multiclass"),  # integers with few values
        (["Adelie", "Gentoo", "Chinstrap"], "multiclass"),  # strings
        ([1.0, 2.0, 3.0], "multiclass"),  # whole numbers read as floats
        ([1.5, 2.25, 3.0], "regression"),  # a float target
        (list(range(21)), "regression"),  # integers with more than 20 values
        ([100_000, 215_000, 189_900, 244_000] * 6 + list(range(30)), "regression"),
    ],
)
def test_the_problem_type_is_inferred_from_the_target(values, expected):
    assert problem_type_of(pd.Series(values)) == expected


def test_text_with_too_many_values_is_no_target():
    with pytest.raises(DatasetError, match="21 distinct text values"):
        problem_type_of(pd.Series([f"c{i}" for i in range(21)]))


TRAIN = pd.DataFrame(
    {
        "Id": [1, 2, 3, 4],
        "Price": [10.5, 20.25, 30.0, 12.75],
        "Area": [50, 60, 70, 80],
        "Quality": [1.0, None, 3.0, 4.0],
        "Street": ["Pave", "Grvl", None, "Pave"],
    }
)


def test_features_are_every_other_column_numbers_numeric_the_rest_categorical():
    dataset = resolve({"id_column": "Id", "target_column": "Price"}, TRAIN)
    assert dataset == Dataset(
        "Id",
        "Price",
        "regression",
        ("Area", "Quality"),
        ("Street",),
        ("problem_type", "numeric_columns", "categorical_columns"),
    )
    assert dataset.describe() == (
        "regression (inferred) on Price, 2 numeric and 1 categorical features (inferred)"
    )
    assert dataset.as_config() == {
        "id_column": "Id",
        "target_column": "Price",
        "problem_type": "regression",
        "numeric_columns": ["Area", "Quality"],
        "categorical_columns": ["Street"],
    }


def test_what_is_written_wins_and_the_rest_is_completed():
    written = {"id_column": "Id", "target_column": "Price", "categorical_columns": ["Quality"]}
    dataset = resolve(written, TRAIN)
    assert dataset.categorical_columns == ("Quality",)
    assert dataset.numeric_columns == ("Area",), "Quality is taken, Street is text"
    assert dataset.inferred == ("problem_type", "numeric_columns")
    written = {**written, "problem_type": "regression", "numeric_columns": ["Area"]}
    assert resolve(written, TRAIN).inferred == ()


@pytest.mark.parametrize(
    ("written", "key", "message"),
    [
        ({"target_column": "Price"}, "id_column", "required"),
        ({"id_column": "Id"}, "target_column", "required"),
        ({"id_column": "Id", "target_column": "SalePrice"}, "target_column", "no column"),
        ({"id_column": "Id", "target_column": "Id"}, "target_column", "cannot be the id"),
        (
            {"id_column": "Id", "target_column": "Price", "problem_type": "ranking"},
            "problem_type",
            "expected one of binary, multiclass, regression",
        ),
        (
            {"id_column": "Id", "target_column": "Price", "numeric_columns": ["Price"]},
            "numeric_columns",
            "is the id or the target",
        ),
        (
            {"id_column": "Id", "target_column": "Price", "numeric_columns": "Area"},
            "numeric_columns",
            "a list of column names",
        ),
        (
            {
                "id_column": "Id",
                "target_column": "Price",
                "numeric_columns": ["Area"],
                "categorical_columns": ["Area"],
            },
            "categorical_columns",
            "numeric_columns too",
        ),
    ],
)
def test_a_wrong_dataset_names_the_key(written, key, message):
    with pytest.raises(DatasetError, match=message) as caught:
        resolve(written, TRAIN)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("problem", "column", "message"),
    [
        ("binary", "yes\nno\nNA\n", "needs a value on every row; line 4 has 'NA' (read as"),
        ("binary", 'yes\nno\n""\n', "needs a value on every row; line 4 has no value"),
        ("binary", "a\nb\nc\n", "takes two values, not 3: 'a' (1 row), 'b' (1 row), 'c' (1 row)"),
        ("multiclass", "a\nb\na\n", 'has only two classes: set [Dataset] problem_type = "binary"'),
        ("multiclass", "a\na\n", "needs at least two classes; all rows are a"),
        ("regression", "1.5\n2\nabc\nx\n", "is a number; line 4 has 'abc' (2 such rows)"),
        ("regression", "1.5\n2\n-3e4\n", None),
        ("multiclass", "3\n7\n9\n3\n", None),
    ],
)  # fmt: skip
def test_the_target_must_suit_the_problem_type(problem, column, message):
    text = "y\n" + column
    target = InputFile("train.csv", ("y",), target="y", problem=problem)
    if message is None:
        check_target(text, Path("train.csv"), target)
        return
    with pytest.raises(InputError) as error:
        check_target(text, Path("train.csv"), target)
    assert f"column 'y': a {problem} target {message}" in str(error.value)
