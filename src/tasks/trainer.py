"""Fit the model of record: cleaning, encoding and the configured estimator in one pipeline."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
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
    the id, are ignored) in the registry, in batch scoring and behind a REST server.
    """

    estimator = luigi.Parameter(
        default="", description="a scikit-learn estimator class (default: by problem type)"
    )
    estimator_params = luigi.DictParameter(default={})
    seed = luigi.NumericalParameter(default=0, var_type=int, min_value=0, max_value=2**32)
    cv_folds = luigi.NumericalParameter(default=5, var_type=int, min_value=2, max_value=2**63)
    autolog = luigi.BoolParameter(default=False, description="let mlflow.sklearn.autolog log too")

    outputs = {"model": "model"}

    @property
    def estimator_path(self) -> str:
        """The configured estimator, or the default for the dataset's problem type."""
        return self.estimator or DEFAULT_ESTIMATORS[self.dataset.problem_type]

    def implied_values(self) -> dict[str, object]:
        return {} if self.estimator else {"estimator": self.estimator_path}

    def metric_names(self) -> tuple[str, ...]:
        """Cross-validated accuracy for classes, the root mean squared error otherwise, and
        the score on the train split (what `model.score` gives: accuracy, or R²)."""
        if self.dataset.is_classification:
            return ("cv_accuracy", "cv_accuracy_std", "train_accuracy")
        return ("cv_rmse", "cv_rmse_std", "train_r2")

    def gives_probabilities(self) -> bool | None:
        """Whether the estimator predicts probabilities (SVC only with probability=True);
        None when that cannot be told without fitting."""
        try:
            estimator = estimator_class(self.estimator_path)(**self.estimator_params)
        except Exception:  # a bad estimator or parameter: validate() or fit() will say
            return None
        return hasattr(estimator, "predict_proba")

    def validate(self) -> dict[str, str]:
        from sklearn.base import BaseEstimator, is_classifier, is_regressor

        try:
            cls = estimator_class(self.estimator_path)
        except (ImportError, AttributeError, ValueError) as error:
            return {"estimator": str(error)}
        fits = all(callable(getattr(cls, name, None)) for name in ("fit", "predict"))
        if not (isinstance(cls, type) and issubclass(cls, BaseEstimator) and fits):
            return {"estimator": f"'{self.estimator}' is not a scikit-learn estimator class"}
        problem = self.dataset.problem_type
        try:
            example = cls()  # scikit-learn tells the kind of an estimator from an instance
        except TypeError:  # one that needs arguments: its fit will say
            return {}
        suits = is_regressor(example) if problem == "regression" else is_classifier(example)
        if not suits:
            kind = "a regressor" if problem == "regression" else "a classifier"
            return {
                "estimator": f"'{self.estimator_path}' does not fit a {problem} target: "
                f"name {kind} (or leave estimator out for {DEFAULT_ESTIMATORS[problem]})"
            }
        return params_problem(example, dict(self.estimator_params))

    def run(self) -> None:
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

        ID, TARGET = self.dataset.id_column, self.dataset.target_column
        train = self.load("train")
        features, target = train.drop(columns=[ID, TARGET]), train[TARGET]
        model = build_pipeline(
            self.estimator_path,
            dict(self.estimator_params),
            self.seed,
            numeric=list(features.select_dtypes("number").columns),
            categorical=list(features.select_dtypes(exclude="number").columns),
        )
        classes = self.dataset.is_classification
        smallest = target.value_counts().min() if classes else len(target)
        if smallest < self.cv_folds:
            what = f"of its smallest {TARGET} class" if classes else ""
            raise ValueError(
                f"the train split has {smallest} rows {what}: too few "
                f"for {self.cv_folds}-fold cross-validation (lower [Trainer] cv_folds)"
            )
        splitter = StratifiedKFold if classes else KFold
        folds = splitter(self.cv_folds, shuffle=True, random_state=self.seed)
        if self.autolog:
            import mlflow.sklearn

            with self.fluent_run():
                mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
                model.fit(features, target)
                mlflow.sklearn.autolog(disable=True)
        scoring, sign = ("accuracy", 1) if classes else ("neg_root_mean_squared_error", -1)
        scores = sign * cross_val_score(model, features, target, cv=folds, scoring=scoring)
        model.fit(features, target)
        cv_mean, cv_std, train_score = self.metric_names()
        self.log_metrics(
            **{cv_mean: scores.mean(), cv_std: scores.std()},
            **{train_score: model.score(features, target)},
        )
        self.save_model(model, example=features.head(5))


DEFAULT_ESTIMATORS = {
    "binary": "sklearn.linear_model.LogisticRegression",
    "multiclass": "sklearn.linear_model.LogisticRegression",
    "regression": "sklearn.linear_model.Ridge",
}


def probability_columns(classes, probabilities) -> dict[str, object]:
    """The model's probabilities as columns: `probability` of the positive class (the second of
    two) for a binary target, `probability_<class>` for each class of a multiclass one, none
    when the estimator gives none (a regressor, or an SVC without `probability`)."""
    if probabilities is None:
        return {}
    if len(classes) == 2:
        return {"probability": probabilities[:, 1]}
    return {f"probability_{label}": probabilities[:, i] for i, label in enumerate(classes)}


def estimator_class(dotted_path: str) -> type:
    """`sklearn.linear_model.LogisticRegression` -> the class; a misspelt module or class
    is an ImportError or AttributeError naming the nearest one there is."""
    module_name, _, name = dotted_path.rpartition(".")
    if not module_name:
        raise ValueError(f"'{dotted_path}' is not a dotted path like sklearn.svm.SVC")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        parent, _, _ = module_name.rpartition(".")
        siblings = _submodules(parent) if parent else []
        raise ImportError(f"no module {module_name}{_nearest(module_name, siblings)}") from None
    if not hasattr(module, name):
        public = [n for n in dir(module) if not n.startswith("_")]
        hint = _nearest(name, public)
        raise AttributeError(f"{module_name} has no {name}{hint}")
    return getattr(module, name)


def params_problem(example: object, params: dict) -> dict[str, str]:
    """`estimator_params` the estimator lacks or refuses, before anything is fitted: an
    unknown key with the nearest parameter it has, or scikit-learn's own check of a value."""
    known = example.get_params(deep=False)
    for key in params:
        if key not in known:
            hint = _nearest(key, list(known))
            has = "" if hint else f" (it has: {', '.join(sorted(known))})"
            return {
                "estimator_params": f"{type(example).__name__} has no parameter '{key}'{hint}{has}"
            }
    check = getattr(example.set_params(**params), "_validate_params", None)
    try:
        if callable(check):
            check()  # scikit-learn's constraints on each parameter, as fit would apply them
    except (ValueError, TypeError) as error:
        return {"estimator_params": str(error).replace("\n", " ")}
    return {}


def _nearest(name: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def _submodules(package: str) -> list[str]:
    try:
        found = importlib.import_module(package)
    except ImportError:
        return []
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(getattr(found, "__path__", []))]


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
