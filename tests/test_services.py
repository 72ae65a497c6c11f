"""End to end against a real tracking server started as a process (`mlflow server`)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import (
    KAGGLE,
    copy_project,
    reused_from,
    run_runner,
    runner_env,
    task_statuses,
)
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_tracking_server_with_proxied_artifacts(mlflow_server, tmp_path, monkeypatch):
    project = copy_project(tmp_path / "project")
    env = runner_env(MLFLOW_TRACKING_URI=mlflow_server)
    result = run_runner(project, "--set", f'PathConfig.input="{KAGGLE}"', env=env)
    assert result.returncode == 0, result.stderr
    assert mlflow_server in result.stdout, "the summary links the server's UI"
    assert "View run" not in result.stdout and "View experiment" not in result.stdout
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("titanic")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    listed = {f.path for f in client.list_artifacts(run.info.run_id, "Prediction")}
    assert listed == {
        f"Prediction/{name}"
        for name in ("submission.csv", "predictions.parquet", "_card.html", "_manifest.json")
    }
    assert "report.html" in {f.path for f in client.list_artifacts(run.info.run_id)}
    champion = client.get_model_version_by_alias("titanic", "champion")
    assert champion.source.startswith("models:/m-"), "registered from the run's Logged Model"
    [model] = client.search_logged_models([run.info.experiment_id])
    assert model.artifact_location.startswith("mlflow-artifacts:/")
    import mlflow.artifacts
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert mlflow.pyfunc.load_model("models:/titanic@champion").predict(
        pd.read_csv(KAGGLE / "test.csv")  # Kaggle's raw rows, Name, Ticket, Cabin and all
    ).shape == (418,)

    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="Prediction/submission.csv",
        dst_path=str(tmp_path),
        tracking_uri=mlflow_server,
    )
    assert len(pd.read_csv(path)) == 418
    assert not any("mlflow-artifacts" in p.name for p in project.rglob("*")), (
        "no folder named after the URI"
    )
    assert not (project / "mlartifacts").exists() and not (project / "mlflow.db").exists()
    assert not list((project / ".luigiflow" / "staging").rglob("*.csv")), "staging is emptied"

    # reuse works through the server too: the model is downloaded, not retrained
    source = run.info.run_id
    result = run_runner(
        project,
        "--set",
        f'PathConfig.input="{KAGGLE}"',
        "--no-cache",
        "--set",
        f'PathConfig.Trainer="runs:/{source}/Trainer"',
        env=env,
    )
    assert result.returncode == 0, result.stderr
    latest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"]
    )[0]
    assert "Trainer" not in task_statuses(latest, client)
    assert reused_from(latest, client)["Trainer"] == f"runs:/{source}/Trainer"


def test_workers_log_into_the_run_on_a_server(project, mlflow_server):
    env = runner_env(MLFLOW_TRACKING_URI=mlflow_server)
    result = run_runner(
        project, "--workers", "2", "--set", 'RunConfig.experiment_name="workers"', env=env
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("workers").experiment_id])
    assert run.info.status == "FINISHED" and "cv_accuracy" in run.data.metrics
    statuses = task_statuses(run, client)
    assert {t: statuses[t] for t in ("Preprocessor", "Trainer", "Prediction")} == {
        "Preprocessor": "FINISHED",
        "Trainer": "FINISHED",
        "Prediction": "FINISHED",
    }
