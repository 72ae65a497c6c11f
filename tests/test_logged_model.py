"""The model of record as an MLflow 3 Logged Model: made once per trained model, linked to
its run and its metrics, registered and loaded by `models:/m-...`, checked like any output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import artifacts, edit_task, run_runner, runs, store

pytestmark = pytest.mark.slow


def logged_models(project: Path) -> list:
    client = store(project)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_logged_models(experiments)


def test_a_run_has_one_logged_model_with_its_params_and_metrics(project, first_run):
    [run] = runs(project)
    [model] = logged_models(project)
    assert str(model.status.name if hasattr(model.status, "name") else model.status) == "READY"
    assert model.source_run_id == run.info.run_id and model.name == "LogisticRegression"
    assert model.params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert model.tags["mlflow.source.name"] == run.data.tags["mlflow.source.name"], (
        "the Models tab says where it was logged from"
    )
    linked = {m.key: m.value for m in model.metrics}
    assert {"cv_accuracy", "accuracy", "roc_auc", "log_loss"} <= set(linked)
    assert linked["roc_auc"] == run.data.metrics["roc_auc"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]

    manifest = json.loads((artifacts(project, run) / "Trainer/_manifest.json").read_text())
    assert manifest["models"] == {"model": model.model_id}
    [version] = store(project).search_model_versions("name = 'titanic'")
    assert version.source == f"models:/{model.model_id}"

    # reused outright, or copied into the new run: no second Logged Model
    assert run_runner(project).returncode == 0
    assert run_runner(project, "--copy-reused").returncode == 0
    assert [m.model_id for m in logged_models(project)] == [model.model_id]


def test_scoring_by_the_logged_model_and_the_alias_agree_and_a_changed_file_is_refused(
    project, first_run
):
    [model] = logged_models(project)
    batch = pd.read_parquet(artifacts(project, runs(project)[0]) / "Prediction/predictions.parquet")
    by_id = f'Prediction.model_uri="models:/{model.model_id}"'
    for setting in (by_id, 'Prediction.model_uri="models:/titanic@champion"'):
        result = run_runner(project, "--set", setting)
        assert result.returncode == 0, result.stderr
        scored = artifacts(project, runs(project)[0]) / "Prediction/predictions.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(scored), batch)

    location = Path(model.artifact_location.removeprefix("file://"))
    example = location / "input_example.json"
    example.write_text(example.read_text().replace("3", "2", 1))
    result = run_runner(project, "--set", by_id, "--force", "Prediction")
    assert result.returncode == 1
    assert "input_example.json differs from its manifest" in result.stderr


def test_a_trainer_that_fails_leaves_a_failed_logged_model_never_reused(project):
    edit_task(
        project,
        "trainer",
        "        self.save_model(model, example=features.head(5))",
        "        self.save_model(model, example=features.head(5))\n"
        "        raise RuntimeError('after the model was saved')",
        replace=True,
    )
    result = run_runner(project)
    assert result.returncode == 1
    [failed] = logged_models(project)
    assert "FAILED" in str(failed.status)
