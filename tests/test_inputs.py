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
    check_files,
    problem_type_of,
    resolve,
    resolve_dataset,
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
        (
            {"id_column": "Id", "target_column": "Price", "numeric_columns": ["Area", "Area"]},
            "numeric_columns",
            "lists 'Area' twice",
        ),
    ],
)
def test_a_wrong_dataset_names_the_key(written, key, message):
    with pytest.raises(DatasetError, match=message) as caught:
        resolve(written, TRAIN)
    assert caught.value.key == key


class Reads:
    """A task as `check_files` sees it: its input files."""

    task_family = "Reads"

    def __init__(self, **files: InputFile) -> None:
        self.files = files

    def input_files(self) -> dict[str, InputFile]:
        return self.files

    def significant_params(self) -> dict[str, str]:
        return {}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    return tmp_path


def test_an_input_file_that_links_outside_the_project_is_refused(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.csv"
    outside.write_text("id,x\n1,2\n")
    (project / "input" / "train.csv").symlink_to(outside)
    with pytest.raises(InputError) as refused:
        check_files(Reads(t=InputFile("train.csv")), project / "input", project)
    assert str(refused.value) == (
        f"{project / 'input' / 'train.csv'} links to {outside}, outside the input folder "
        "and the project"
    )
    with pytest.raises(InputError, match=r"train\.csv links to .*secret\.csv"):
        resolve_dataset({"id_column": "id"}, project / "input", project)
    (project / "input" / "passwd.csv").symlink_to("/etc/passwd")
    with pytest.raises(InputError, match="links to /etc/passwd"):
        check_files(Reads(t=InputFile("passwd.csv")), project / "input", project)


def test_a_link_inside_the_project_is_fine_and_a_folder_is_no_input_file(project):
    (project / "data.csv").write_text("id,x\n1,2\n")
    (project / "input" / "train.csv").symlink_to(project / "data.csv")
    check_files(Reads(t=InputFile("train.csv", ("id",))), project / "input", project)
    (project / "input" / "test.csv").mkdir()
    with pytest.raises(InputError, match=r"test\.csv is not a regular file"):
        check_files(Reads(t=InputFile("test.csv")), project / "input", project)


def test_a_ragged_row_and_a_repeated_or_blank_id_are_named_by_line(project):
    path = project / "input" / "test.csv"
    path.write_text('id,x\n1,2\n2,"a, b"\n3,4,5\n')
    with pytest.raises(InputError, match=r"test\.csv line 4 has 3 fields where the header has 2"):
        check_files(Reads(t=InputFile("test.csv")), project / "input", project)
    repeated = id_problem(project, "id,x\n892,1\n893,2\n892,3\n")
    assert "column 'id': an id must be unique, and 1 value repeat: '892' (lines 2, 4)" in repeated
    blank = id_problem(project, "id,x\n892,1\n,2\n894,3\n \t,4\n")
    assert "column 'id': every row needs an id, and 2 rows have none (lines 3, 5)" in blank


def id_problem(project: Path, text: str) -> str:
    """What is said of test.csv holding `text`, with `id` its id column."""
    (project / "input" / "test.csv").write_text(text)
    with pytest.raises(DatasetError) as refused:
        check_files(Reads(t=InputFile("test.csv", unique=("id",))), project / "input", project)
    assert refused.value.key == "id_column"
    return str(refused.value)


def test_a_column_of_numbers_with_a_few_words_is_refused_unless_declared_categorical(project):
    rows = "\n".join(f"{i},{i % 2},{'unknown' if i in (3, 17) else 20 + i}" for i in range(40))
    (project / "input" / "train.csv").write_text("id,y,age\n" + rows + "\n")
    written = {"id_column": "id", "target_column": "y"}
    with pytest.raises(DatasetError) as refused:
        resolve_dataset(written, project / "input", project)
    assert refused.value.key == "categorical_columns"
    assert (
        "column 'age' holds numbers but for 2 values: 'unknown' (line 5), 'unknown' (line 19). "
        "Clean it in Preprocessor (src/tasks/preprocessor.py), or declare 'age' categorical in "
        "[Dataset] categorical_columns"
    ) in str(refused.value)
    declared = {**written, "categorical_columns": ["age"]}
    dataset, _ = resolve_dataset(declared, project / "input", project)
    assert dataset.categorical_columns == ("age",)


def test_text_in_a_column_the_model_takes_as_numbers_is_refused(project):
    (project / "input" / "test.csv").write_text("id,age\n1,22\n2,n/a?\n3,\n")
    scoring = InputFile("test.csv", numeric=("age",))
    with pytest.raises(DatasetError, match=r"'age' is a column of numbers with text in it: "
                       r"'n/a\?' \(line 3\)"):  # fmt: skip
        check_files(Reads(t=scoring), project / "input", project)


def test_a_header_that_names_a_column_twice_is_refused(project):
    path = project / "input" / "test.csv"
    path.write_text("id,age,age\n1,2,3\n")
    with pytest.raises(InputError, match="the header names 'age' twice"):
        check_files(Reads(t=InputFile("test.csv")), project / "input", project)


def test_infinity_in_a_column_of_numbers_is_refused_naming_numeric_columns(project):
    (project / "input" / "test.csv").write_text("id,age\n1,22\n2,inf\n3,-Infinity\n")
    with pytest.raises(DatasetError) as refused:
        check_files(Reads(t=InputFile("test.csv", numeric=("age",))), project / "input", project)
    assert refused.value.key == "numeric_columns"
    assert str(refused.value).endswith(
        "column 'age' is a column of numbers with infinite values in it: 'inf' (line 3), "
        "'-Infinity' (line 4). Clean it in Preprocessor (src/tasks/preprocessor.py)"
    )


def test_a_missing_column_says_why_when_the_header_shows_it():
    spaced = pd.DataFrame({"Id": [1, 2], "Price ": [3, 4]})
    with pytest.raises(DatasetError, match="no column 'Price', but 'Price ': mind the spaces"):
        resolve({"id_column": "Id", "target_column": "Price"}, spaced)
    tabbed = pd.DataFrame({"Id\tPrice": ["1\t3", "2\t4"]})
    with pytest.raises(DatasetError, match="it reads as one column; separate with commas"):
        resolve({"id_column": "Id", "target_column": "Price"}, tabbed)
