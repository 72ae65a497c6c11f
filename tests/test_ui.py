"""The MLflow UI shows a run's Logged Model: the API saying the run has one (test_logged_model)
does not prove that `make ui`'s run page lists it, so a headless Chromium renders the page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import runs, service, store

pytestmark = pytest.mark.slow

# `make ui`'s command, its job runner off as there (the run page needs no jobs)
UI = ["mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1"]
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def rendered(url: str, profile: Path) -> str:
    """The DOM of `url` once MLflow's React app has rendered it. Virtual time advances only
    while the page is idle (no fetch in flight), so a slow machine waits longer in real time,
    never shorter in page time; the subprocess timeout bounds it."""
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--window-size=1600,1200",
        "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout


def test_the_run_page_lists_the_runs_logged_model(project, first_run, tmp_path):
    [run] = runs(project)
    [model] = store(project).search_logged_models([run.info.experiment_id])

    with service([*UI, "--workers", "1"], "/health", project, **NO_JOBS) as url:
        page = f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        dom = rendered(page, tmp_path / "chromium")
        if model.model_id not in dom:  # once more, for a page still loading on a busy machine
            dom = rendered(page, tmp_path / "chromium")

    assert run.info.run_name in dom, "the run page did not render"
    # Its "Logged models (1)" table: a row per model, a link by id, named. A run without one
    # shows "Logged models —" in "About this run" instead.
    assert "Logged models (1)" in dom
    assert f'row-id="{model.model_id}"' in dom
    assert f'/models/{model.model_id}">{model.name}</a>' in dom
