"""What the terminal shows: lines cut to its width, paths as a person would type them, and
the addresses `make ui` prints."""

from __future__ import annotations

import importlib.util
import sqlite3

from conftest import REPO

from luigiflow.terminal import LOG_WIDTH, fit, shown, width


def test_each_line_is_cut_to_the_width_and_says_it_was():
    assert fit("short\n" + "x" * 30, 10) == "short\n" + "x" * 9 + "…"
    assert fit("x" * 10, 10) == "x" * 10
    assert width() == LOG_WIDTH, "a test's output is no terminal: a log's width"
    assert fit("y" * 500) == "y" * (LOG_WIDTH - 1) + "…"


def test_a_path_is_shown_from_the_working_directory_when_below_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "logs" / "run.log") == "logs/run.log"
    outside = tmp_path.parent / "elsewhere.log"
    assert shown(outside) == str(outside)


def make_ui_script():
    spec = importlib.util.spec_from_file_location("ui", REPO / "scripts" / "ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_ui_prints_each_active_experiment_s_model_training_page(tmp_path):
    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE experiments (experiment_id, name, lifecycle_stage)")
        db.executemany(
            "INSERT INTO experiments VALUES (?, ?, ?)",
            [(0, "Default", "active"), (1, "titanic", "active"), (2, "old", "deleted")],
        )
    pages = make_ui_script().experiment_pages(store, "http://127.0.0.1:51577")
    assert pages == [
        "  Default: http://127.0.0.1:51577/#/experiments/0?workflowType=machine_learning",
        "  titanic: http://127.0.0.1:51577/#/experiments/1?workflowType=machine_learning",
    ]
    assert make_ui_script().experiment_pages(tmp_path / "none.db", "http://x") == []
