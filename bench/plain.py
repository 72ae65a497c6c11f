"""The baseline: the example pipeline as a careful user writes it by hand, in one script.

Same work as src/tasks: select and type the columns, a stratified validation split, 5-fold
cross-validation and a fit on the train split, the validation metrics (the custom one
included), the criteria, three plots, then the submission and the probabilities of the raw test
rows. No orchestration. With --tracking-uri it also logs what a careful MLflow user logs:
params, metrics, plots, the model (explicit pip requirements, no autolog), the submission, and
registers the model with an alias when the criteria pass. Standalone on purpose: it imports
nothing from the project.
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
from sklearn import metrics as m
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC, CATEGORICAL = ["Pclass", "Age", "SibSp", "Parch"], ["Sex"]
SKOPS_TRUSTED = ["numpy.dtype"]
PARAMS = {"estimator": "LogisticRegression", "max_iter": 1000, "seed": 0, "cv_folds": 5}
CRITERIA = {"accuracy": 0.75, "roc_auc": 0.80}


def typed(raw: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("PassengerId", "Survived") if c in raw]
    table = raw[keep + NUMERIC + CATEGORICAL].copy()
    table[NUMERIC] = table[NUMERIC].apply(pd.to_numeric, errors="coerce")
    table[CATEGORICAL] = table[CATEGORICAL].astype(object).where(table[CATEGORICAL].notna(), None)
    return table


def pipeline() -> Pipeline:
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    preprocess = ColumnTransformer(
        [("numeric", numeric, NUMERIC), ("categorical", categorical, CATEGORICAL)]
    )
    estimator = LogisticRegression(max_iter=PARAMS["max_iter"], random_state=PARAMS["seed"])
    return Pipeline([("preprocess", preprocess), ("estimator", estimator)])


def evaluate(model, validation: pd.DataFrame, out: Path) -> dict[str, float]:
    """The Evaluator's work: metrics on the validation split and three plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    features, truth = validation[NUMERIC + CATEGORICAL], validation["Survived"].to_numpy()
    predicted, proba = model.predict(features), model.predict_proba(features)
    values = {
        "accuracy": m.accuracy_score(truth, predicted),
        "precision": m.precision_score(truth, predicted, zero_division=0),
        "recall": m.recall_score(truth, predicted, zero_division=0),
        "f1": m.f1_score(truth, predicted, zero_division=0),
        "roc_auc": m.roc_auc_score(truth, proba[:, 1]),
        "log_loss": m.log_loss(truth, proba),
        "balanced_accuracy": m.balanced_accuracy_score(truth, predicted),
    }
    validation.assign(predicted=predicted, probability=proba[:, 1]).to_parquet(
        out / "validation_predictions.parquet", index=False
    )
    figure = ConfusionMatrixDisplay.from_predictions(truth, predicted, colorbar=False).figure_
    figure.savefig(out / "confusion_matrix.png", dpi=80)
    figure = RocCurveDisplay.from_predictions(truth, proba[:, 1], plot_chance_level=True).figure_
    figure.savefig(out / "roc_curve.png", dpi=80)
    figure, axes = plt.subplots(figsize=(6, 4))
    weights = model[-1].coef_[0]
    axes.barh(model[:-1].get_feature_names_out(), weights)
    figure.savefig(out / "feature_importance.png", dpi=80)
    plt.close("all")
    return {k: float(v) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tracking-uri", help="log to MLflow too")
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)

    table = typed(pd.read_csv(args.data / "train.csv"))
    train, validation = train_test_split(
        table, test_size=0.2, stratify=table["Survived"], random_state=PARAMS["seed"]
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
        **evaluate(model, validation, args.out),
    }
    validated = all(metrics[name] >= threshold for name, threshold in CRITERIA.items())

    test = pd.read_csv(args.data / "test.csv")  # raw rows: the model picks its columns
    survived = model.predict(test).astype(int)
    submission = pd.DataFrame({"PassengerId": test["PassengerId"], "Survived": survived})
    submission.to_csv(args.out / "submission.csv", index=False)
    submission.assign(probability=model.predict_proba(test)[:, 1]).to_parquet(
        args.out / "predictions.parquet", index=False
    )

    if args.tracking_uri:
        log_to_mlflow(args.tracking_uri, model, features, metrics, validated, args.out)
    print(json.dumps({"seconds": time.monotonic() - started}), file=sys.stderr)


def log_to_mlflow(uri, model, features, metrics, validated, out: Path) -> None:
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("plain")
    with mlflow.start_run():
        mlflow.log_params(PARAMS)
        mlflow.log_metrics(metrics)
        mlflow.set_tag("validation", "VALIDATED" if validated else "REJECTED")
        example = features.head(5)
        requirements = [
            f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy", "skops")
        ]
        info = mlflow.sklearn.log_model(  # MLflow's default format, skops, with the types it needs
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=requirements,
            skops_trusted_types=SKOPS_TRUSTED,
        )
        for name in ("submission.csv", "predictions.parquet", "validation_predictions.parquet"):
            mlflow.log_artifact(str(out / name))
        for name in ("confusion_matrix.png", "roc_curve.png", "feature_importance.png"):
            mlflow.log_artifact(str(out / name), "plots")
        if validated:
            registered = mlflow.register_model(info.model_uri, "plain")
            mlflow.MlflowClient().set_registered_model_alias(
                "plain", "champion", registered.version
            )


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    main()
