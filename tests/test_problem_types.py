"""The examples beyond Titanic, end to end: Ames house prices (a regression) and Palmer
penguins (three classes), their data made by the project's own script as a user makes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, artifacts, run_runner, runs, served_predictions, store

pytestmark = pytest.mark.slow

AMES = "examples/ames/luigi.toml"
PENGUINS = "examples/penguins/luigi.toml"


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """`scripts/make_example_data.py` for both examples, once: the folders of their inputs."""
    folder = tmp_path_factory.mktemp("examples")
    for name in ("ames", "penguins"):
        command = ["scripts/make_example_data.py", "--dataset", name, "--out", folder / name]
        subprocess.run([sys.executable, *command], check=True, cwd=REPO, capture_output=True)
    return folder


def with_data(project: Path, example_data: Path, name: str) -> Path:
    shutil.copytree(example_data / name, project / "examples" / name / "input")
    return project


@pytest.fixture
def ames(project, example_data):
    """One run of the Ames example, which its criteria validate and register."""
    with_data(project, example_data, "ames")
    result = run_runner(project, "--config", AMES)
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    return run, result.stdout


def test_ames_is_a_regression_from_raw_rows_with_missing_values(project, ames):
    run, stdout = ames
    train = pd.read_csv(project / "examples/ames/input/train.csv")
    assert train["Lot_Frontage"].isna().any() and train["Mas_Vnr_Type"].isna().any()
    assert (
        "Dataset: regression on SalePrice, 33 numeric and 40 categorical features (inferred)"
        in (stdout)
    )
    metrics = run.data.metrics
    assert {"rmse", "mae", "r2", "mape", "rmsle", "cv_rmse", "train_r2"} <= set(metrics)
    assert not {"accuracy", "roc_auc", "log_loss", "cv_accuracy"} & set(metrics)
    assert 0 < metrics["mae"] <= metrics["rmse"] < 35_000 and 0.8 <= metrics["r2"] < 1
    assert run.data.tags["luigiflow.validation"] == "VALIDATED"
    assert run.data.params["Dataset.problem_type"] == "regression"

    folder = artifacts(project, run)
    evaluation = json.loads((folder / "Evaluator/evaluation.json").read_text())
    assert [c["direction"] for c in evaluation["criteria"]] == ["lower", "higher"], (
        "an error is at most its threshold without saying so"
    )
    plots = {p.name for p in (folder / "Evaluator").glob("*.png")}
    assert plots == {"predicted_vs_actual.png", "residuals.png", "feature_importance.png"}
    scored = pd.read_parquet(folder / "Evaluator/validation_predictions.parquet")
    assert (scored["error"] - (scored["predicted"] - scored["SalePrice"]).abs()).abs().max() < 1e-6
    card = (folder / "Evaluator/_card.html").read_text()
    assert "largest absolute errors" in card and "accuracy" not in card

    submission = pd.read_csv(folder / "Prediction/submission.csv")
    test = pd.read_csv(project / "examples/ames/input/test.csv")
    assert list(submission.columns) == ["Id", "SalePrice"]
    assert submission["Id"].tolist() == test["Id"].tolist()
    assert submission["SalePrice"].between(10_000, 1_000_000).all(), "prices, not classes"
    predictions = pd.read_parquet(folder / "Prediction/predictions.parquet")
    assert list(predictions.columns) == ["Id", "SalePrice"], "a regression has no probabilities"

    [version] = store(project).search_model_versions("name = 'ames'")
    assert version.run_id == run.info.run_id
    assert "rmse" in version.description and "<= 35000" in version.description


def test_ames_scores_alike_from_the_registry_and_behind_a_server(project, ames):
    run, _ = ames
    batch = pd.read_csv(artifacts(project, run) / "Prediction/submission.csv")
    result = run_runner(
        project, "--config", AMES, "--set", 'Prediction.model_uri="models:/ames@champion"'
    )
    assert result.returncode == 0, result.stderr
    registered = pd.read_csv(artifacts(project, runs(project)[0]) / "Prediction/submission.csv")
    pd.testing.assert_frame_equal(batch, registered)

    rows = pd.read_csv(project / "examples/ames/input/test.csv").head(50)  # raw, with gaps
    answer = served_predictions(project, rows, "--config", AMES)
    assert answer == pytest.approx(batch["SalePrice"].head(50).tolist())


def test_penguins_are_three_classes_with_a_probability_each(project, example_data):
    with_data(project, example_data, "penguins")
    result = run_runner(project, "--config", PENGUINS)
    assert result.returncode == 0, result.stderr
    assert "Dataset: multiclass (inferred) on species" in result.stdout
    [run] = runs(project)
    metrics = run.data.metrics
    assert {"accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss"} <= set(metrics)
    assert not {"precision", "roc_auc", "rmse"} & set(metrics)
    assert metrics["f1_macro"] >= 0.9 and run.data.tags["luigiflow.validation"] == "VALIDATED"
    # The estimator left out is the one the problem type implies, named as if written.
    assert run.info.run_name == "LogisticRegression"
    assert run.data.params["Trainer.estimator"] == "sklearn.linear_model.LogisticRegression"

    folder = artifacts(project, run)
    plots = {p.name for p in (folder / "Evaluator").glob("*.png")}
    assert plots == {"confusion_matrix.png", "feature_importance.png"}
    predictions = pd.read_parquet(folder / "Prediction/predictions.parquet")
    classes = ["Adelie", "Chinstrap", "Gentoo"]
    assert list(predictions.columns) == ["Id", "species", *(f"probability_{c}" for c in classes)]
    probabilities = predictions[[f"probability_{c}" for c in classes]].to_numpy()
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-9
    most_likely = [classes[i] for i in probabilities.argmax(axis=1)]
    assert predictions["species"].tolist() == most_likely
    submission = pd.read_csv(folder / "Prediction/submission.csv")
    assert set(submission["species"]) <= set(classes) and len(submission) == 100


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        (AMES, 'Evaluator.validation_criteria=[{metric="accuracy",threshold=0.8}]',
         "unknown metric 'accuracy' (a binary metric; [Dataset] problem_type is regression)"),
        (AMES, 'Trainer.estimator="sklearn.linear_model.LogisticRegression"',
         "does not fit a regression target: name a regressor"),
        (PENGUINS, 'Dataset.problem_type="binary"', "a binary target takes two values, not 3"),
        (PENGUINS, 'Dataset.problem_type="regression"', "a regression target is a number"),
        (AMES, 'Evaluator.custom_metrics=["balanced_accuracy"]',
         "[Evaluator] custom_metrics: 'balanced_accuracy' is a metric for binary or multiclass "
         "problems; [Dataset] problem_type is regression"),
        (PENGUINS, "Trainer.estimator_params={max_iters=1000}",
         "[Trainer] estimator_params: LogisticRegression has no parameter 'max_iters' "
         "(did you mean max_iter?)"),
        (PENGUINS, "Trainer.estimator_params={max_iter=-5}",
         "The 'max_iter' parameter of LogisticRegression must be an int in the range [0, inf)"),
        (PENGUINS, "Trainer.estimator=sklearn.ensemble.RandomForrestClassifier",
         "sklearn.ensemble has no RandomForrestClassifier (did you mean RandomForestClassifier?)"),
        (PENGUINS, "Trainer.estimator=sklearn.linear_modle.LogisticRegression",
         "no module sklearn.linear_modle (did you mean sklearn.linear_model?)"),
    ],
    ids=["metric of another problem", "classifier on prices", "three classes", "text",
         "custom metric of classes", "unknown estimator param", "refused param value",
         "misspelt class", "misspelt module"],
)  # fmt: skip
def test_wrong_combinations_exit_2_before_any_run(project, example_data, config, override, message):
    with_data(project, example_data, "ames" if config == AMES else "penguins")
    result = run_runner(project, "--config", config, "--set", override)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert f"error: --set {override.partition('=')[0]} " in result.stderr, "the value's source"
    assert "Traceback" not in result.stderr
    assert runs(project) == []


def test_a_sweep_that_selects_a_metric_no_task_logs_stops_before_any_run(project, example_data):
    with_data(project, example_data, "penguins")
    result = run_runner(
        project, "--config", PENGUINS, "--sweep", "Trainer.seed=0,1",
        "--set", 'Sweep.select="roc_auc"', "--dry-run",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert (
        "--set Sweep.select [Sweep] select: no task logs 'roc_auc' for a multiclass problem. "
        "Did you mean 'roc_auc_ovr'?"
    ) in result.stderr
    assert runs(project) == []
    plain = run_runner(project, "--config", PENGUINS, "--set", 'Sweep.select="roc_auc"')
    assert plain.returncode == 2 and "no task logs 'roc_auc'" in plain.stderr, "unused, checked"
    assert runs(project) == []
