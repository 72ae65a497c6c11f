"""Config values, one at a time: checked against the parameter they set (a bad one is a
ConfigError before any MLflow run exists), kept native, handed to the tasks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

import luigi

import tasks
from luigiflow.config import ConfigError, load_config
from luigiflow.inputs import Dataset
from luigiflow.runstate import draft
from luigiflow.values import serialize

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    cls.get_task_family(): cls
    for cls in (
        tasks.Preprocessor,
        tasks.Splitter,
        tasks.Trainer,
        tasks.Evaluator,
        tasks.Register,
        tasks.Prediction,
    )
}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    return Path(shutil.copy(REPO / "luigi.toml", tmp_path / "luigi.toml"))


def load(path: Path, *overrides: str):
    return load_config(path, path.parent, TASKS, overrides=list(overrides))


def planned(dataset: Dataset, **sections: dict) -> str:
    """The run id of tasks built as a plan builds them, before their run exists: they read
    their values and `[Dataset]` from the draft context."""
    return draft({"Dataset": dataset.as_config(), **sections}, "Prediction", "input")


# What the plan resolves from the example's [Dataset], and from a regression's.
BINARY = planned(Dataset("PassengerId", "Survived", "binary", ("Pclass", "Age"), ("Sex",)))
REGRESSION = planned(Dataset("Id", "Price", "regression", ("Area",), ()))


def error(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, *overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "Splitter.validation_fraction=1.5",
            "[Splitter] validation_fraction: invalid value 1.5: must be > 0 and < 1",
        ),
        (
            "Splitter.validation_fraction=0",
            "[Splitter] validation_fraction: invalid value 0: must be > 0 and < 1",
        ),
        ("Splitter.seed=-1", "[Splitter] seed: invalid value -1: must be >= 0 and < 4294967296"),
        ("Trainer.seed=-1", "[Trainer] seed: invalid value -1: must be >= 0 and < 4294967296"),
        (
            "Trainer.seed=4294967296",
            "[Trainer] seed: invalid value 4294967296: must be >= 0 and < 4294967296",
        ),
        ("Trainer.cv_folds=1", "[Trainer] cv_folds: invalid value 1: must be >= 2"),
        ("Evaluator.worst_rows=-1", "[Evaluator] worst_rows: invalid value -1: must be >= 0"),
        ("Prediction.batch_size=0", "[Prediction] batch_size: invalid value 0: must be >= 1"),
    ],
)
def test_out_of_range_values_are_refused(config_path, override, message):
    assert error(config_path, override) == f"--set {override.partition('=')[0]} {message}"


def test_native_toml_values_are_range_checked_too(config_path):
    text = config_path.read_text().replace("cv_folds = 5", "cv_folds = 1")
    config_path.write_text(text)
    assert error(config_path) == (
        f"{config_path} [Trainer] cv_folds: invalid value 1: must be >= 2"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("Trainer.cv_folds=true", "[Trainer] cv_folds: expected an integer, got bool True"),
        ("Trainer.seed=1.5", "[Trainer] seed: expected an integer, got float 1.5"),
        ("Trainer.seed='3'", "[Trainer] seed: expected an integer, got str '3'"),
        (
            "Splitter.validation_fraction=true",
            "[Splitter] validation_fraction: expected a number, got bool True",
        ),
        (
            "Evaluator.validation_criteria='accuracy>0.7'",
            "[Evaluator] validation_criteria: expected an array, got str 'accuracy>0.7'",
        ),
        ("Trainer.estimator_params='C=1'", "expected a table, got str 'C=1'"),
    ],
)
def test_wrong_types_are_refused(config_path, override, message):
    assert message in error(config_path, override)


def test_boundary_values_pass_and_reach_the_tasks(config_path):
    config = load(
        config_path,
        "Splitter.validation_fraction=0.5",
        "Splitter.seed=0",
        "Trainer.seed=4294967295",
        "Trainer.cv_folds=2",
        "Evaluator.worst_rows=0",
        "Prediction.batch_size=1",
    )
    dataset = Dataset("PassengerId", "Survived", "binary", ("Pclass", "Age"), ("Sex",))
    run = planned(dataset, **config.task_sections())
    splitter, trainer = tasks.Splitter(run_id=run), tasks.Trainer(run_id=run)
    assert (splitter.validation_fraction, splitter.seed) == (0.5, 0)
    assert (trainer.seed, trainer.cv_folds) == (4294967295, 2)
    assert tasks.Evaluator(run_id=run).worst_rows == 0
    assert tasks.Prediction(run_id=run).batch_size == 1
    assert trainer.validate() == {}


def test_choice_parameters_check_type_and_membership():
    param = luigi.ChoiceParameter(choices=["html", "plain"])
    assert serialize(param, "plain") == "plain"
    with pytest.raises(ValueError, match=r"invalid value 'pdf': must be one of 'html', 'plain'"):
        serialize(param, "pdf")
    with pytest.raises(ValueError, match="expected a string, got int 3"):
        serialize(param, 3)
    numbers = luigi.ChoiceParameter(choices=[1, 2], var_type=int)
    assert serialize(numbers, 2) == "2"
    with pytest.raises(ValueError, match="expected an integer, got bool True"):
        serialize(numbers, True)


@pytest.mark.parametrize("path", ["os.path.join", "collections.OrderedDict", "luigi.Task"])
def test_estimator_must_be_a_scikit_learn_estimator(path):
    problems = tasks.Trainer(run_id=BINARY, estimator=path).validate()
    assert problems == {"estimator": f"'{path}' is not a scikit-learn estimator class"}


def test_estimator_that_does_not_import_is_reported():
    problems = tasks.Trainer(run_id=BINARY, estimator="sklearn.linear_model.Nope").validate()
    assert set(problems) == {"estimator"}


def test_the_estimator_must_suit_the_problem_type():
    ridge = "sklearn.linear_model.Ridge"
    problems = tasks.Trainer(run_id=BINARY, estimator=ridge).validate()
    assert problems == {
        "estimator": f"'{ridge}' does not fit a binary target: name a classifier (or leave "
        "estimator out for sklearn.linear_model.LogisticRegression)"
    }
    assert tasks.Trainer(run_id=REGRESSION, estimator="").estimator_path == ridge
    assert tasks.Trainer(run_id=REGRESSION, estimator="").validate() == {}
    forest = "sklearn.ensemble.RandomForestClassifier"
    assert (
        "does not fit a regression target: name a regressor"
        in (tasks.Trainer(run_id=REGRESSION, estimator=forest).validate()["estimator"])
    )


def test_default_and_other_estimators_pass():
    assert tasks.Trainer(run_id=BINARY).validate() == {}
    estimator = "sklearn.ensemble.RandomForestClassifier"
    assert tasks.Trainer(run_id=BINARY, estimator=estimator).validate() == {}


def test_a_criterion_on_probabilities_needs_an_estimator_that_gives_them(monkeypatch):
    svc = "sklearn.svm.SVC"
    assert tasks.Trainer(run_id=BINARY, estimator=svc).gives_probabilities() is False
    given = {"probability": True}
    assert tasks.Trainer(run_id=BINARY, estimator=svc, estimator_params=given).gives_probabilities()
    assert tasks.Trainer(run_id=BINARY, estimator_params={"nope": 1}).gives_probabilities() is None

    criteria = [{"metric": "accuracy", "threshold": 0.7}, {"metric": "roc_auc", "threshold": 0.8}]
    evaluator = tasks.Evaluator(run_id=BINARY, validation_criteria=criteria)
    monkeypatch.setattr(tasks.Trainer, "estimator_path", svc)
    monkeypatch.setattr(tasks.Trainer, "gives_probabilities", lambda self: False)
    assert evaluator.validate() == {
        "validation_criteria": f"roc_auc needs probabilities, which {svc} does not give with "
        "these estimator_params"
    }
    monkeypatch.setattr(tasks.Trainer, "gives_probabilities", lambda self: None)
    assert evaluator.validate() == {}, "what cannot be told before fitting is left to the run"


def test_a_value_is_checked_once_into_the_native_form_the_task_is_built_with():
    from luigiflow.values import argument, checked

    assert checked(luigi.FloatParameter(), 3) == 3.0 and isinstance(
        checked(luigi.FloatParameter(), 3), float
    )
    assert checked(luigi.ListParameter(), '["a", "b"]') == ["a", "b"]
    assert checked(luigi.DictParameter(), {"C": 1}) == {"C": 1}
    assert checked(luigi.NumericalParameter(var_type=int, min_value=0, max_value=9), 4) == 4
    with pytest.raises(ValueError, match="must be >= 0 and < 9"):
        checked(luigi.NumericalParameter(var_type=int, min_value=0, max_value=9), 9)
    assert argument(luigi.IntParameter(), 7) == 7, "a native value is the argument itself"
    import datetime

    date = checked(luigi.DateParameter(), "2026-01-02")
    assert date == "2026-01-02", "a value TOML has no type for stays the text Luigi parses"
    assert argument(luigi.DateParameter(), date) == datetime.date(2026, 1, 2)
