"""Cards and the run report, without a run: what a table's profile says, and what never fails."""

from __future__ import annotations

import numpy as np
import pandas as pd

from luigiflow import cards
from luigiflow.report import TaskOutcome


def test_a_profile_counts_missing_values_and_draws_distributions():
    table = pd.DataFrame(
        {"Age": [22.0, np.nan, 30.0], "Sex": ["male", None, "female"], "Pclass": [1, 3, 3]}
    )
    text = cards.profile(table)
    assert "3 rows × 3 columns" in text
    assert text.count("1 (33.3%)") == 2, "Age and Sex each miss one value"
    assert "min 22 · median 26 · max 30" in text
    assert text.count("<svg") == 3
    assert "<h3>First 5 rows</h3>" in text and "female" in text


def test_a_large_table_is_profiled_on_a_sample_but_missing_values_on_all_rows():
    table = pd.DataFrame({"x": np.arange(25_000, dtype=float)})
    table.loc[:99, "x"] = np.nan
    text = cards.profile(table)
    assert "25,000 rows × 1 columns (distinct values and distributions from 10,000" in text
    assert "100 (0.4%)" in text


def test_a_table_that_cannot_be_profiled_does_not_raise():
    text = cards.profile(pd.DataFrame({"odd": [{"a": 1}, {"b": 2}]}))
    assert text.startswith("<p class=muted>No profile: ")


def test_values_are_escaped():
    text = cards.profile(pd.DataFrame({"<b>": ["<script>alert(1)</script>"]}))
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_the_report_names_every_task_even_without_outputs():
    outcomes = [
        TaskOutcome("Preprocessor", "ran", 0.5, "no earlier run"),
        TaskOutcome("Trainer", "failed", 1.0, "see errors/Trainer.txt"),
    ]
    page = cards.run_report("Run report", {"run": "r1", "empty": ""}, outcomes, {})
    assert page.startswith("<!DOCTYPE html>")
    assert "<section id='Preprocessor'>" in page and "<section id='Trainer'>" in page
    assert page.count("No outputs in this run.") == 2
    assert "empty" not in page, "empty facts are left out"
