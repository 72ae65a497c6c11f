"""What is inside an input table: rows as wide as the header, unique ids, numbers where
numbers are expected, a target that suits the problem type."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from luigiflow.contents import ContentError, check_mostly_numeric, check_rows, check_target


@pytest.mark.parametrize(
    ("problem", "column", "message", "key"),
    [
        ("binary", "yes\nno\nNA\n",
         "needs a value on every row; line 4 has 'NA' (read as", "target_column"),
        ("binary", 'yes\nno\n""\n',
         "needs a value on every row; line 4 has no value", "target_column"),
        ("binary", "a\nb\nc\n",
         "takes two values, not 3: 'a' (1 row), 'b' (1 row), 'c' (1 row)", "problem_type"),
        ("multiclass", "a\nb\na\n",
         'has only two classes: set [Dataset] problem_type = "binary"', "problem_type"),
        ("multiclass", "a\na\n", "needs at least two classes; all rows are a", "target_column"),
        ("regression", "1.5\n2\nabc\nx\n",
         "is a number; line 4 has 'abc' (2 such rows)", "problem_type"),
        ("regression", "1.5\n2\n-3e4\n", None, None),
        ("multiclass", "3\n7\n9\n3\n", None, None),
    ],
)  # fmt: skip
def test_the_target_must_suit_the_problem_type(problem, column, message, key):
    """A mismatch names problem_type (the key to change), a bad column target_column."""
    text = "y\n" + column
    if message is None:
        check_target(text, Path("train.csv"), "y", problem)
        return
    with pytest.raises(ContentError) as error:
        check_target(text, Path("train.csv"), "y", problem)
    assert f"column 'y': a {problem} target {message}" in str(error.value)
    assert error.value.key == key


def test_every_ragged_line_is_counted_and_quoted_line_breaks_are_not_ragged():
    text = 'a,b\n1,"two\nlines"\n1\n\n2,3\n4,5,6\n'
    with pytest.raises(ContentError) as ragged:
        check_rows(text, Path("t.csv"))
    assert str(ragged.value) == (
        "t.csv line 4 has 1 fields where the header has 2 (2 such lines: 4, 7): a comma "
        "inside a value must be quoted"
    )


def test_a_column_of_words_is_a_category_and_so_is_one_with_many_words():
    table = pd.DataFrame({"c": ["a", "b", "1"] * 10, "d": [str(i) for i in range(30)]})
    check_mostly_numeric(table, Path("t.csv"), ["c", "d"])
