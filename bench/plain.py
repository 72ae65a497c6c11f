"""The baseline: the example pipeline as a careful user writes it by hand, in one script.

Same work as src/tasks (select and type the columns, 5-fold cross-validation, fit, predict,
write the submission), with no orchestration. With --tracking-uri it also logs what a careful
MLflow user logs: params, metrics, the model (explicit pip requirements, no autolog) and the
submission. Standalone on purpose: it imports nothing from the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC, CATEGORICAL = ["Pclass", "Age", "SibSp", "Parch"], ["Sex"]
SKOPS_TRUSTED = ["numpy.dtype", "sklearn.compose._column_transformer.make_column_selector"]
PARAMS = {"estimator": "LogisticRegression", "max_iter": 1000, "seed": 0, "cv_folds": 5}


def typed(raw: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("PassengerId", "Survived") if c in raw]
    table = raw[keep + NUMERIC + CATEGORICAL].copy()
    table[NUMERIC] = table[NUMERIC].apply(pd.to_numeric, errors="coerce").astype("float64")
    table[CATEGORICAL] = table[CATEGORICAL].astype(object).where(table[CATEGORICAL].notna(), None)
    return table


def pipeline() -> Pipeline:
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ]
    )
    estimator = LogisticRegression(max_iter=PARAMS["max_iter"], random_state=PARAMS["seed"])
    return Pipeline([("preprocess", preprocess), ("estimator", estimator)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tracking-uri", help="log to MLflow too")
    args = parser.parse_args()
    started = time.monotonic()

    train, test = (
        typed(pd.read_csv(args.data / "train.csv")),
        typed(pd.read_csv(args.data / "test.csv")),
    )
    features, target = train.drop(columns=["PassengerId", "Survived"]), train["Survived"]
    model = pipeline()
    folds = StratifiedKFold(PARAMS["cv_folds"], shuffle=True, random_state=PARAMS["seed"])
    scores = cross_val_score(model, features, target, cv=folds)
    model.fit(features, target)
    metrics = {
        "cv_accuracy": scores.mean(),
        "cv_accuracy_std": scores.std(),
        "train_accuracy": model.score(features, target),
    }
    submission = pd.DataFrame(
        {"PassengerId": test["PassengerId"], "Survived": model.predict(test[features.columns])}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    submission.to_csv(args.out / "submission.csv", index=False)

    if args.tracking_uri:
        log_to_mlflow(args.tracking_uri, model, features, metrics, args.out / "submission.csv")
    print(json.dumps({"seconds": time.monotonic() - started}), file=sys.stderr)


def log_to_mlflow(uri, model, features, metrics, submission) -> None:
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("plain")
    with mlflow.start_run():
        mlflow.log_params(PARAMS)
        mlflow.log_metrics(metrics)
        example = features.head(5)
        requirements = [
            f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy", "skops")
        ]
        mlflow.sklearn.log_model(  # MLflow's default format, skops, with the types it needs
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=requirements,
            skops_trusted_types=SKOPS_TRUSTED,
        )
        mlflow.log_artifact(str(submission))


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    main()
