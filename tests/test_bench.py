"""The benchmark harness runs end to end (its timings are not checked here: see bench/)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_benchmark_measures_every_variant(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/run.py"),
            "--quick",
            "--work",
            str(tmp_path),
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    variants = results["sizes"]["example"]
    for name in (
        "import floor",
        "store floor",
        "plain",
        "plain + MLflow",
        "luigiflow cold",
        "luigiflow reused",
        "luigiflow --workers 2",
        "luigiflow on server",
        "luigiflow reused on server",
        "create empty store",
        "branches, 1 worker",
        "branches, 2 workers on two clones",
    ):
        assert variants[name] and variants[name][0]["seconds"] > 0, name
    assert variants["branches, 1 worker"][0]["processes"] == 1
    assert results["machine"]["postgresql"], "the server variants ran on PostgreSQL"
    cold = variants["luigiflow cold"][0]
    tasks = {"Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction"}
    assert set(cold["tasks"]) == tasks
    assert variants["luigiflow reused"][0]["tasks"] == {}, "a fully reused run runs no task"
    requests = variants["luigiflow on server"][0]["requests"]
    assert requests["POST /api/2.0/mlflow/runs/log-batch"] <= len(tasks) + 2, (
        "one batch per task, one for params, one for the conclusions"
    )
    verification = results["verification"]["example"]
    for store in ("embedded", "server"):
        assert set(verification[store]) == tasks, store
        assert verification[store]["Trainer"]["files"] >= 3, "the model folder's files"
    assert set(results["serialization"]) == {"skops", "cloudpickle"}
    report = (tmp_path / "RESULTS.md").read_text()
    assert "cold / plain + MLflow" in report and "reused / store floor" in report
    assert "reused on server / reused" in report and "speed-up of 2 workers" in report
    assert "Verifying a reused task's outputs" in report
