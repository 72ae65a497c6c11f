"""The kind of model a registered name holds: schemas compared, recorded as tags, and
expected before the run from `[Dataset]` and train.csv."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from luigiflow.inputs import Dataset, read_train, resolve
from luigiflow.models import ModelSchema, expected, from_signature
from tasks.preprocessor import Preprocessor

TITANIC = ModelSchema(
    {"Pclass": "long", "Age": "double", "SibSp": "long", "Parch": "long", "Sex": "string"},
    "binary",
    "Survived",
)


def test_the_same_kind_of_model_has_no_differences():
    assert TITANIC.differences(TITANIC) == []
    reordered = ModelSchema(dict(reversed(list(TITANIC.inputs.items()))), "binary", "Survived")
    assert TITANIC.differences(reordered) == [], "columns are found by name"


def test_numbers_are_numbers_whole_or_not_and_a_column_without_values_matches_any_kind():
    """MLflow infers `long` or `double` from the input example's few rows."""
    refreshed = ModelSchema(
        {**TITANIC.inputs, "Age": "long", "Pclass": "double"}, "binary", "Survived"
    )
    assert TITANIC.differences(refreshed) == []
    blank = ModelSchema({**TITANIC.inputs, "Sex": "any"}, "binary", "Survived")
    assert TITANIC.differences(blank) == []


def test_each_difference_is_named():
    wine = ModelSchema(
        {"alcohol": "double", "Age": "double", "Sex": "double", "Pclass": "long"},
        "multiclass",
        "cultivar",
    )
    assert TITANIC.differences(wine) == [
        "problem type binary (this run: multiclass)",
        "target Survived (this run: cultivar)",
        "columns SibSp, Parch not in this run",
        "columns alcohol new in this run",
        "column Sex a text (this run: a number)",
    ]


def test_long_column_lists_are_cut_short():
    wide = ModelSchema({f"c{i}": "double" for i in range(12)}, "regression", "y")
    [missing, added] = wide.differences(ModelSchema({"x": "double"}, "regression", "y"))
    assert missing == "columns c0, c1, c2, c3, c4 and 7 more not in this run"
    assert added == "columns x new in this run"


def test_what_either_side_does_not_know_is_not_compared():
    unknown = ModelSchema(TITANIC.inputs, None, None)
    assert unknown.differences(ModelSchema(TITANIC.inputs, "regression", "Fare")) == []
    assert TITANIC.differences(ModelSchema(None, "binary", "Survived")) == []
    assert TITANIC.differences(ModelSchema(None, "binary", "Fare")) == [
        "target Survived (this run: Fare)"
    ]


def test_tags_round_trip_and_a_version_without_them_has_no_schema():
    tags = TITANIC.tags()
    assert tags == {
        "luigiflow.schema.inputs": '{"Pclass": "long", "Age": "double", "SibSp": "long", '
        '"Parch": "long", "Sex": "string"}',
        "luigiflow.schema.problem_type": "binary",
        "luigiflow.schema.target": "Survived",
    }
    assert ModelSchema.from_tags({**tags, "luigiflow.fingerprint": "abc"}) == TITANIC
    assert ModelSchema.from_tags({"luigiflow.fingerprint": "abc"}) is None
    assert ModelSchema({"a": "long"}, None, None).tags() == {
        "luigiflow.schema.inputs": '{"a": "long"}'
    }


def test_a_signature_as_mlflow_writes_it():
    inputs = [
        {"type": "long", "name": "Pclass", "required": True},
        {"type": "string", "name": "Sex", "required": False},
    ]
    schema = from_signature(inputs, "binary", "Survived")
    assert schema == ModelSchema({"Pclass": "long", "Sex": "string"}, "binary", "Survived")
    assert schema.describe() == "binary on Survived from Pclass (number), Sex (text)"


def test_the_expected_schema_types_columns_as_the_preprocessor_does():
    train = pd.DataFrame(
        {
            "Id": [1, 2, 3, 4],
            "y": [0, 1, 0, 1],
            "count": [1, 2, 3, 4],
            "gap": [1.5, np.nan, 2.0, 3.0],
            "flag": [True, False, True, True],
            "typed_as_number": ["1", "2", "x", "4"],
            "colour": ["red", None, "blue", "red"],
            "grade": [1, 2, 2, 3],
        }
    )
    dataset = Dataset(
        "Id", "y", "binary", ("count", "gap", "flag", "typed_as_number"), ("colour", "grade")
    )
    assert expected(dataset, train) == ModelSchema(
        {
            "count": "long",
            "gap": "double",
            "flag": "boolean",
            "typed_as_number": "double",
            "colour": "string",
            "grade": "long",
        },
        "binary",
        "y",
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_expected_schema_is_the_signature_the_trainer_saves(seed):
    """What the plan expects of the example data is what MLflow infers from the rows the
    Trainer gives it as an input example (the Preprocessor's typed features, five rows)."""
    from mlflow.models import infer_signature

    path = REPO / "input" / "train.csv"
    written = {
        "id_column": "PassengerId",
        "target_column": "Survived",
        "categorical_columns": ["Sex", "Pclass"],  # numbers kept as categories too
    }
    dataset = resolve(written, read_train(path))
    typed = Preprocessor.typed(SimpleNamespace(dataset=dataset), pd.read_csv(path))
    features = typed.drop(columns=["PassengerId", "Survived"]).sample(frac=1, random_state=seed)
    with warnings.catch_warnings():  # MLflow's hint about whole numbers
        warnings.simplefilter("ignore")
        signature = infer_signature(features.head(5))
    saved = from_signature(signature.inputs.to_dict(), "binary", "Survived")
    assert saved.differences(expected(dataset, read_train(path))) == []
    assert list(saved.inputs) == list(expected(dataset, read_train(path)).inputs)
