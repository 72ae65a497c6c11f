"""Split, evaluate against criteria, register, score from the registry, serve, and the report."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import artifacts, run_runner, runs, served_predictions, store, task_statuses

from luigiflow.names import better
from luigiflow.sweep import load as load_sweep
from tasks.evaluator import (
    check,
    classification_metrics,
    criterion_problem,
    regression_metrics,
)

IMPOSSIBLE = 'Evaluator.validation_criteria=[{ metric = "accuracy", threshold = 0.999 }]'
KNOWN = ("accuracy", "roc_auc", "log_loss", "balanced_accuracy")


# criteria, without a run ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("criterion", "problem"),
    [
        ({"metric": "accuracy", "threshold": 0.8}, None),
        ({"metric": "log_loss", "threshold": 0.5, "direction": "lower"}, None),
        ({"metric": "acuracy", "threshold": 0.8}, "unknown metric 'acuracy'"),
        ({"metric": "accuracy", "threshold": "high"}, "must be a number, not 'high'"),
        ({"metric": "accuracy", "threshold": True}, "must be a number, not True"),
        ({"metric": "accuracy", "threshold": float("nan")}, "must be a finite number, not nan"),
        ({"metric": "log_loss", "threshold": float("inf")}, "must be a finite number, not inf"),
        ({"metric": "accuracy", "threshold": 0.8, "direction": "up"}, "'higher' (at least)"),
        ({"metric": "accuracy", "treshold": 0.8}, "unknown key 'treshold'"),
        ("accuracy > 0.8", "each criterion is a table"),
    ],
)
def test_criteria_are_checked(criterion, problem):
    found = criterion_problem(criterion, KNOWN)
    assert found is None if problem is None else problem in found


def test_a_criterion_passes_or_fails_in_its_direction():
    values = {"accuracy": 0.8, "log_loss": 0.45}
    assert check({"metric": "accuracy", "threshold": 0.8}, values)["passed"]
    assert not check({"metric": "accuracy", "threshold": 0.81}, values)["passed"]
    assert check({"metric": "log_loss", "threshold": 0.5}, values)["passed"], "lower is better"
    failed = check({"metric": "log_loss", "threshold": 0.4}, values)
    assert not failed["passed"] and failed["text"] == "log_loss 0.4500 > 0.4"


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("rmse", "lower"), ("mae", "lower"), ("mape", "lower"), ("log_loss", "lower"),
        ("cv_rmse", "lower"), ("rmsle", "lower"), ("median_absolute_error", "lower"),
        ("r2", "higher"), ("accuracy", "higher"), ("f1_macro", "higher"),
        ("roc_auc_ovr", "higher"), ("balanced_accuracy", "higher"),
        ("cv_rmse_std", "lower"), ("mean_poisson_deviance", "lower"), ("error_rate", "lower"),
        ("neg_mean_squared_error", "higher"), ("cv_accuracy_std", "higher"),
    ],
)  # fmt: skip
def test_errors_are_better_lower_and_scores_higher(metric, direction):
    assert better(metric) == direction


def test_a_regression_criterion_is_at_most_its_threshold_unless_it_says_otherwise():
    values = {"rmse": 25_000.0, "r2": 0.85, "rmsle": 0.14}
    assert check({"metric": "rmse", "threshold": 30_000}, values)["passed"]
    too_big = check({"metric": "rmse", "threshold": 20_000}, values)
    assert not too_big["passed"] and too_big["text"] == "rmse 25000.0000 > 20000"
    assert check({"metric": "rmsle", "threshold": 0.15}, values)["direction"] == "lower"
    assert not check({"metric": "r2", "threshold": 0.9}, values)["passed"]
    said = check({"metric": "rmse", "threshold": 30_000, "direction": "higher"}, values)
    assert not said["passed"], "a written direction wins over the default"


def test_mape_is_left_out_where_the_target_has_zeros_and_its_criterion_says_why():
    values = regression_metrics(np.array([0.0, 2.0, 4.0]), np.array([0.5, 2.0, 3.0]))
    assert set(values) == {"rmse", "mae", "r2"}
    assert values["mae"] == pytest.approx(0.5)
    failed = check({"metric": "mape", "threshold": 0.1}, values)
    assert not failed["passed"] and "one of the validation set is 0" in failed["text"]
    no_probabilities = check({"metric": "roc_auc", "threshold": 0.8}, {"accuracy": 0.9})
    assert (
        no_probabilities["text"] == "roc_auc was not computed: the estimator gives no probabilities"
    )
    assert regression_metrics(np.array([1.0, 2.0]), np.array([1.5, 2.0]))["mape"] == 0.25


def test_classification_metrics_follow_the_number_of_classes_and_take_text_labels():
    truth = np.array(["no", "yes", "yes", "no"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    binary = classification_metrics(
        truth, np.array(["no", "yes", "no", "no"]), proba, ["no", "yes"]
    )
    assert set(binary) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert binary["recall"] == 0.5 and binary["roc_auc"] == 1.0, "'yes' is the positive class"

    truth = np.array(["a", "b", "c", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]])
    three = classification_metrics(
        truth, np.array(["a", "b", "c", "a"]), proba, ["a", "b", "c"], "multiclass"
    )
    assert set(three) == {"accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss"}
    assert three["accuracy"] == 0.75 and 0 < three["f1_macro"] < 1


def test_a_metric_of_another_problem_type_is_named_as_such():
    known = ("rmse", "mae", "r2", "mape")
    found = criterion_problem({"metric": "roc_auc", "threshold": 0.8}, known, "regression")
    assert "(a binary metric; [Dataset] problem_type is regression)" in found
    assert "e.g." not in found and 'metric = "rmse"' in criterion_problem("x", known)


def test_a_sweep_on_an_error_picks_the_lowest_unless_told():
    parameters = {"Trainer": ["seed"]}

    def direction(**settings) -> str:
        return load_sweep(
            {"Trainer.seed": [0, 1], **settings}, [], "luigi.toml", parameters
        ).direction

    assert direction(select="rmse") == "lower"
    assert direction(select="r2") == "higher"
    assert direction(select="rmse", direction="higher") == "higher"


# end to end ------------------------------------------------------------------------------------


def versions(project: Path, name: str = "titanic") -> list:
    return store(project).search_model_versions(f"name = '{name}'")


@pytest.fixture
def validated(project, first_run, cold_run):
    """One cold run of the example project, whose default criteria pass, and what it printed."""
    [run] = runs(project)
    return run, cold_run.stdout


@pytest.mark.slow
def test_a_validated_model_is_registered_once_with_its_alias(project, validated, monkeypatch):
    run, stdout = validated
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["luigiflow.validation"] == "VALIDATED"
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        assert 0 < metrics[name] < 1, name
    assert 0.5 < metrics["balanced_accuracy"] < 1, "the custom metric of luigi.toml is logged"
    assert metrics["train_rows"] + metrics["validation_rows"] == 891

    [version] = versions(project)
    assert store(project).get_model_version_by_alias("titanic", "champion").version == (
        version.version
    )
    assert version.run_id == run.info.run_id
    assert (
        "once per model fingerprint" in store(project).get_registered_model("titanic").description
    )
    assert version.description.startswith("VALIDATED on the validation set (accuracy ")
    trainer = tags["luigiflow.task.Trainer.fingerprint"]  # <fingerprint>:<manifest digest>
    assert trainer.startswith(version.tags["luigiflow.fingerprint"] + ":")
    assert "Registration: models:/titanic@champion = version 1\n" in stdout

    again = run_runner(project, "--no-cache")
    assert again.returncode == 0, again.stderr
    assert len(versions(project)) == 1, "the same fingerprint is registered once"
    assert "version 1 (already registered: no new version)" in again.stdout

    client = store(project)
    # MLflow's registry looks a `models:/m-...` source up through the global tracking URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    moved = client.create_model_version("titanic", version.source, version.run_id)
    client.set_registered_model_alias("titanic", "champion", moved.version)
    reused = run_runner(project)
    assert reused.returncode == 0, reused.stderr
    assert "@champion has since moved to version 2" in reused.stdout


@pytest.mark.slow
def test_a_rejected_model_is_not_registered_and_says_why(project):
    result = run_runner(project, "--set", IMPOSSIBLE)
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["luigiflow.validation"] == "REJECTED"
    assert run.data.tags["luigiflow.validation.failed"].startswith("accuracy 0.")
    assert "< 0.999" in run.data.tags["luigiflow.validation.failed"]
    assert "Validation: REJECTED" in result.stdout
    assert "Registration: not registered (REJECTED: accuracy 0." in result.stdout
    assert versions(project) == []
    evaluation = json.loads((artifacts(project, run) / "Evaluator/evaluation.json").read_text())
    assert evaluation["criteria"][0]["passed"] is False
    assert (artifacts(project, run) / "Prediction/submission.csv").exists(), "still scored"

    strict = run_runner(project, "--set", IMPOSSIBLE, "--require-validated")
    assert strict.returncode == 3, "for CI scripts: rejected even though every task was reused"
    assert runs(project)[0].info.status == "FINISHED"

    allowed = run_runner(project, "--set", IMPOSSIBLE, "--set", "Register.allow_unvalidated=true")
    assert allowed.returncode == 0, allowed.stderr
    [version] = versions(project)
    assert "Registered although rejected" in version.description
    assert version.tags["luigiflow.validation"] == "REJECTED"


@pytest.mark.slow
def test_bad_criteria_stop_before_any_run(project):
    for value, message in (
        ('[{ metric = "acuracy", threshold = 0.8 }]', "unknown metric 'acuracy'"),
        (
            '[{ metric = "accuracy", threshold = "high" }]',
            "the threshold of accuracy must be a number",
        ),
    ):
        result = run_runner(project, "--set", f"Evaluator.validation_criteria={value}")
        assert result.returncode == 2
        assert f"[Evaluator] validation_criteria: {message}" in result.stderr
    result = run_runner(project, "--set", 'Evaluator.custom_metrics=["no_such_metric"]')
    assert result.returncode == 2 and "'no_such_metric' is not a function" in result.stderr
    result = run_runner(project, "--set", 'Prediction.model_uri="titanic"')
    assert result.returncode == 2 and "[Prediction] model_uri" in result.stderr
    assert runs(project) == []


@pytest.mark.slow
def test_a_custom_metric_from_src_tasks_is_logged_and_usable_in_criteria(project):
    metrics_module = project / "src/tasks/metrics.py"
    metrics_module.write_text(
        metrics_module.read_text()
        + "\n\ndef always_seven(y_true, y_pred, y_proba) -> float:\n    return 7.0\n"
    )
    criteria = 'Evaluator.validation_criteria=[{ metric = "always_seven", threshold = 6 }]'
    result = run_runner(
        project, "--set", 'Evaluator.custom_metrics=["always_seven"]', "--set", criteria
    )
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    assert run.data.metrics["always_seven"] == 7.0
    assert run.data.tags["luigiflow.validation"] == "VALIDATED"


@pytest.mark.slow
def test_scoring_from_the_registry_equals_scoring_the_upstream_model(
    project, validated, monkeypatch
):
    first, _ = validated
    result = run_runner(project, "--set", 'Prediction.model_uri="models:/titanic@champion"')
    assert result.returncode == 0, result.stderr
    second = runs(project)[0]
    assert task_statuses(second)["Prediction"] == "FINISHED"
    assert second.data.params["Prediction.scored_model"].startswith("titanic version 1 (run ")
    upstream = pd.read_parquet(artifacts(project, first) / "Prediction/predictions.parquet")
    registry = pd.read_parquet(artifacts(project, second) / "Prediction/predictions.parquet")
    assert list(registry.columns) == ["PassengerId", "Survived", "probability"]
    pd.testing.assert_frame_equal(upstream, registry)
    assert registry["probability"].between(0, 1).all()
    model = artifacts(project, first) / "Trainer/model"
    assert not (model / "registered_model_meta").exists(), "a finished run's outputs stay as made"

    # moving the alias makes the next run score again, and says why
    client = store(project)
    version = client.get_model_version_by_alias("titanic", "champion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    moved = client.create_model_version("titanic", version.source, version.run_id)
    client.set_registered_model_alias("titanic", "champion", moved.version)
    result = run_runner(
        project, "--dry-run", "--set", 'Prediction.model_uri="models:/titanic@champion"'
    )
    assert "Prediction    would run: input models:/titanic@champion changed" in result.stdout


@pytest.mark.slow
def test_the_served_model_answers_raw_rows_like_batch_scoring(project, validated):
    run, _ = validated
    batch = pd.read_csv(artifacts(project, run) / "Prediction/submission.csv")
    rows = pd.read_csv(project / "input/test.csv")  # raw, the passenger id included
    assert served_predictions(project, rows) == batch["Survived"].tolist()


class _Report(HTMLParser):
    """Section ids, table cells and inline images of report.html."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.images, self.cells, self.links = [], [], [], []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            self.images.append((self.sections[-1], attrs["alt"], attrs["src"]))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("script", "link") or (tag == "img" and "http" in attrs.get("src", "")):
            self.links.append(tag)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None


@pytest.mark.slow
def test_the_report_holds_every_task_metric_and_plot(project, validated):
    run, _ = validated
    report = _Report()
    report.feed((artifacts(project, run) / "report.html").read_text())
    tasks = ["Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction"]
    assert report.sections == tasks
    assert report.links == [], "nothing is loaded from elsewhere: the report works offline"
    plots = {alt for section, alt, src in report.images if src.startswith("data:image/png;base64")}
    assert plots == {"confusion_matrix.png", "roc_curve.png", "feature_importance.png"}
    cells = report.cells
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        assert metric in cells, metric
    assert "balanced_accuracy" in cells
    assert cells.count("pass") == 2, "both default criteria, checked"
    assert "VALIDATED" in cells and "validation share" in cells, "verdict and class balance"
    assert "missing" in cells and "Age" in cells, "data profile of the tables"
    assert "probability" in cells and "error" in cells, "the worst-predicted rows"

    reused = run_runner(project)
    assert reused.returncode == 0, reused.stderr
    again = _Report()
    again.feed((artifacts(project, runs(project)[0]) / "report.html").read_text())
    assert again.sections == tasks and len(again.images) == 3, "cards come along when reused"
    assert "reused" in again.cells


# a registered name holds one kind of model ---------------------------------------------------
OTHER_CONFIG = """
[RunConfig]
experiment_name = "titanic"
task = "Prediction"

[PathConfig]
input = "other"

[Dataset]
id_column = "Key"
target_column = "label"

[Evaluator]
validation_criteria = [{ metric = "accuracy", threshold = 0.75 }]
"""


def other_data(project: Path) -> str:
    """Another data set in `other/` (a size and a colour tell yes from no), and a config that
    leaves `[Register] model_name` to follow the experiment, `titanic`, as the example's does."""
    rng = np.random.default_rng(0)
    size, colour = rng.normal(size=300).round(3), rng.choice(["red", "blue"], size=300)
    signal = size + 0.5 * (colour == "red") + rng.normal(scale=0.3, size=300)
    table = pd.DataFrame(
        {
            "Key": range(1, 301),
            "size": size,
            "colour": colour,
            "label": np.where(signal > 0.2, "yes", "no"),
        }
    )
    (project / "other").mkdir()
    table.head(250).to_csv(project / "other" / "train.csv", index=False)
    table.tail(50).drop(columns="label").to_csv(project / "other" / "test.csv", index=False)
    (project / "other.toml").write_text(OTHER_CONFIG)
    return "other.toml"


@pytest.mark.slow
def test_a_registered_name_holds_one_kind_of_model(project, first_run):
    [titanic_run] = runs(project)
    assert titanic_run.data.params["Register.model_name"] == "titanic", "the experiment's name"
    client = store(project)
    holder = client.get_model_version_by_alias("titanic", "champion")
    assert json.loads(holder.tags["luigiflow.schema.inputs"]) == {
        "Pclass": "long", "Age": "double", "SibSp": "long", "Parch": "long", "Sex": "string",
    }  # fmt: skip
    assert holder.tags["luigiflow.schema.problem_type"] == "binary"
    assert holder.tags["luigiflow.schema.target"] == "Survived"

    other = other_data(project)
    refused = run_runner(project, "--config", other)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "other.toml [Register]: models:/titanic@champion (version 1) is another kind of model "
        "than this run registers: target Survived (this run: label); columns Pclass, Age, "
        "SibSp, Parch, Sex not in this run; columns size, colour new in this run."
    ) in refused.stderr
    assert (
        "Register it under another [Register] model_name, or set [Register] replace_schema = "
        "true to replace the holder all the same"
    ) in refused.stderr
    sweep = run_runner(project, "--config", other, "--sweep", "Trainer.seed=0,1")
    assert sweep.returncode == 2, sweep.stdout + sweep.stderr
    assert "models:/titanic@champion (version 1) is another kind of model" in sweep.stderr
    assert len(runs(project)) == 1, "neither made a run"

    renamed = run_runner(project, "--config", other, "--set", "Register.model_name=labels")
    assert renamed.returncode == 0, renamed.stderr
    assert "Registration: models:/labels@champion = version 1" in renamed.stdout
    assert client.get_model_version_by_alias("titanic", "champion").version in (1, "1")

    replacing = run_runner(project, "--config", other, "--set", "Register.replace_schema=true")
    assert replacing.returncode == 0, replacing.stderr
    assert "Registration: models:/titanic@champion = version 2" in replacing.stdout
    replaced = client.get_model_version_by_alias("titanic", "champion")
    assert replaced.tags["luigiflow.schema.target"] == "label"
    assert replaced.tags["luigiflow.schema.replaced"].startswith(
        "replace_schema = true; this model replaced models:/titanic@champion (version 1): "
        "target Survived (this run: label)"
    )
    assert runs(project)[0].data.params["Register.replace_schema"] == "true"
