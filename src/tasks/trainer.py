"""Fit the model of record: cleaning, encoding and the configured estimator in one pipeline."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import luigi

from luigiflow import PipelineTask, requires
from tasks.splitter import Splitter

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


@requires(Splitter)
class Trainer(PipelineTask):
    """Fit imputation, encoding and the estimator on the train split; save it for MLflow.

    The saved model is the whole pipeline, so it takes raw rows (any extra columns, such as
    the passenger id, are ignored) in the registry, in batch scoring and behind a REST server.
    """

    estimator = luigi.Parameter(default="sklearn.linear_model.LogisticRegression")
    estimator_params = luigi.DictParameter(default={})
    seed = luigi.NumericalParameter(default=0, var_type=int, min_value=0, max_value=2**32)
    cv_folds = luigi.NumericalParameter(default=5, var_type=int, min_value=2, max_value=2**63)
    autolog = luigi.BoolParameter(default=False, description="let mlflow.sklearn.autolog log too")

    outputs = {"model": "model"}

    def validate(self) -> dict[str, str]:
        from sklearn.base import BaseEstimator

        try:
            cls = estimator_class(self.estimator)
        except (ImportError, AttributeError, ValueError) as error:
            return {"estimator": str(error)}
        fits = all(callable(getattr(cls, name, None)) for name in ("fit", "predict"))
        if not (isinstance(cls, type) and issubclass(cls, BaseEstimator) and fits):
            return {"estimator": f"'{self.estimator}' is not a scikit-learn estimator class"}
        return {}

    def run(self) -> None:
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        ID, TARGET = self.dataset.id_column, self.dataset.target_column
        train = self.load("train")
        features, target = train.drop(columns=[ID, TARGET]), train[TARGET]
        model = build_pipeline(
            self.estimator,
            dict(self.estimator_params),
            self.seed,
            numeric=list(features.select_dtypes("number").columns),
            categorical=list(features.select_dtypes(exclude="number").columns),
        )
        smallest = target.value_counts().min()
        if smallest < self.cv_folds:
            raise ValueError(
                f"the train split has {smallest} rows of its smallest {TARGET} class: too few "
                f"for {self.cv_folds}-fold cross-validation (lower [Trainer] cv_folds)"
            )
        folds = StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.seed)
        if self.autolog:
            import mlflow.sklearn

            with self.fluent_run():
                mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
                model.fit(features, target)
                mlflow.sklearn.autolog(disable=True)
        scores = cross_val_score(model, features, target, cv=folds)
        model.fit(features, target)
        self.log_metrics(
            cv_accuracy=scores.mean(),
            cv_accuracy_std=scores.std(),
            train_accuracy=model.score(features, target),
        )
        self.save_model(model, example=features.head(5))


def estimator_class(dotted_path: str) -> type:
    """`sklearn.linear_model.LogisticRegression` -> the class."""
    module, _, name = dotted_path.rpartition(".")
    if not module:
        raise ValueError(f"'{dotted_path}' is not a dotted path like sklearn.svm.SVC")
    return getattr(importlib.import_module(module), name)


def build_pipeline(
    estimator: str, params: dict, seed: int, numeric: list[str], categorical: list[str]
) -> Pipeline:
    """Impute and scale numbers, impute and one-hot encode categories, then the estimator.

    Columns are picked by name, so other columns in the input (an id, the target) are dropped.

    scikit-learn is imported here, not at the top: a run that reuses the model never pays
    for importing it.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cls = estimator_class(estimator)
    if "random_state" in cls().get_params():
        params = {"random_state": seed, **params}
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("estimator", cls(**params))])
