"""Judge the model on the validation set and decide whether it may be registered."""

from __future__ import annotations

from collections.abc import Mapping

import luigi
import numpy as np

from luigiflow import PipelineTask, requires
from tasks import metrics
from tasks.splitter import Splitter
from tasks.trainer import Trainer

STANDARD_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
LOWER_IS_BETTER = {"log_loss"}
VALIDATED, REJECTED = "VALIDATED", "REJECTED"


@requires(Splitter, Trainer)
class Evaluator(PipelineTask):
    """Standard and custom metrics on the validation set, checked against the criteria."""

    validation_criteria = luigi.ListParameter(
        default=[], description="[{metric, threshold, direction}]: all must hold to register"
    )
    custom_metrics = luigi.ListParameter(default=[], description="functions in tasks/metrics.py")
    worst_rows = luigi.NumericalParameter(
        default=10,
        var_type=int,
        min_value=0,
        max_value=2**63,
        description="worst-predicted rows in the card",
    )

    outputs = {
        "evaluation": "evaluation.json",
        "predictions": "validation_predictions.parquet",
        "confusion_matrix": "confusion_matrix.png",
        "roc_curve": "roc_curve.png",
        "feature_importance": "feature_importance.png",
    }

    def validate(self) -> dict[str, str]:
        for name in self.custom_metrics:
            if not callable(getattr(metrics, name, None)):
                return {"custom_metrics": f"'{name}' is not a function in src/tasks/metrics.py"}
        known = (*STANDARD_METRICS, *self.custom_metrics)
        for criterion in self.validation_criteria:
            if problem := criterion_problem(criterion, known):
                return {"validation_criteria": problem}
        return {}

    def run(self) -> None:
        ID, TARGET = self.dataset.id_column, self.dataset.target_column
        validation, model = self.load("validation"), self.load("model")
        features, truth = validation.drop(columns=[ID, TARGET]), validation[TARGET].to_numpy()
        predicted = np.asarray(model.predict(features))
        estimator = model.get_raw_model()
        proba = estimator.predict_proba(features) if hasattr(estimator, "predict_proba") else None
        positive = proba[:, 1] if proba is not None and proba.shape[1] == 2 else None

        values = classification_metrics(truth, predicted, proba)
        for name in self.custom_metrics:
            values[name] = float(getattr(metrics, name)(truth, predicted, positive))
        checks = [check(criterion, values) for criterion in self.validation_criteria]
        verdict = VALIDATED if all(c["passed"] for c in checks) else REJECTED
        self.log_metrics(**values)
        self.save("evaluation", {"verdict": verdict, "metrics": values, "criteria": checks})

        scored = validation.assign(predicted=predicted)
        if positive is not None:
            scored = scored.assign(probability=positive, error=np.abs(truth - positive))
        else:
            scored = scored.assign(error=(truth != predicted).astype(float))
        self.save("predictions", scored)
        plot_confusion_matrix(truth, predicted, self.output_path("confusion_matrix"))
        plot_roc_curve(truth, positive, self.output_path("roc_curve"))
        plot_feature_importance(estimator, self.output_path("feature_importance"))

        self.add_to_card("Metrics against the validation criteria", criteria_table(values, checks))
        self.add_to_card(
            f"Worst-predicted validation rows ({verdict})",
            scored.nlargest(self.worst_rows, "error"),
        )

    def conclusions(self) -> dict[str, str]:
        evaluation = self.read_output("evaluation")
        return {"validation": evaluation["verdict"], "validation.failed": failed(evaluation)}


def failed(evaluation: Mapping) -> str:
    """The failed criteria of an evaluation.json, with their values: `accuracy 0.81 < 0.9`."""
    return "; ".join(c["text"] for c in evaluation["criteria"] if not c["passed"])


def criterion_problem(criterion: object, known: tuple[str, ...]) -> str | None:
    """What is wrong with one `validation_criteria` entry, or None."""
    example = '{ metric = "accuracy", threshold = 0.75 }'
    if not isinstance(criterion, Mapping):
        return f"each criterion is a table like {example}, not {criterion!r}"
    unknown = set(criterion) - {"metric", "threshold", "direction"}
    if unknown:
        return f"unknown key {sorted(unknown)[0]!r}; a criterion has metric, threshold, direction"
    name = criterion.get("metric")
    if name not in known:
        return f"unknown metric {name!r}; known metrics: {', '.join(known)}"
    threshold = criterion.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return f"the threshold of {name} must be a number, not {threshold!r}"
    if criterion.get("direction", "higher") not in ("higher", "lower"):
        return f"direction of {name} is 'higher' (at least) or 'lower' (at most)"
    return None


def check(criterion: Mapping, values: Mapping[str, float]) -> dict:
    name, threshold = criterion["metric"], float(criterion["threshold"])
    direction = criterion.get("direction", "lower" if name in LOWER_IS_BETTER else "higher")
    value = values.get(name, float("nan"))
    passed = bool(value >= threshold if direction == "higher" else value <= threshold)
    sign = (">=" if passed else "<") if direction == "higher" else ("<=" if passed else ">")
    return {
        "metric": name,
        "value": value,
        "threshold": threshold,
        "direction": direction,
        "passed": passed,
        "text": f"{name} {value:.4f} {sign} {threshold:g}",
    }


def classification_metrics(truth, predicted, proba) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and, with probabilities, ROC AUC and log loss."""
    from sklearn import metrics as m

    binary = len(np.unique(truth)) <= 2
    average = "binary" if binary else "macro"
    values = {
        "accuracy": m.accuracy_score(truth, predicted),
        "precision": m.precision_score(truth, predicted, average=average, zero_division=0),
        "recall": m.recall_score(truth, predicted, average=average, zero_division=0),
        "f1": m.f1_score(truth, predicted, average=average, zero_division=0),
    }
    if proba is not None:
        values["roc_auc"] = m.roc_auc_score(
            truth, proba[:, 1] if binary else proba, multi_class="ovr"
        )
        values["log_loss"] = m.log_loss(truth, proba)
    return {name: float(value) for name, value in values.items()}


def criteria_table(values: Mapping[str, float], checks: list[dict]):
    import pandas as pd

    rows = []
    for name, value in values.items():
        for c in [c for c in checks if c["metric"] == name] or [None]:
            rule = f"{'≥' if c['direction'] == 'higher' else '≤'} {c['threshold']:g}" if c else ""
            result = ("pass" if c["passed"] else "FAIL") if c else ""
            rows.append(
                {"metric": name, "value": round(value, 4), "criterion": rule, "result": result}
            )
    return pd.DataFrame(rows)


def plot_confusion_matrix(truth, predicted, path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay.from_predictions(truth, predicted, colorbar=False)
    display.ax_.set_title("Confusion matrix (validation)")
    _save(display.figure_, path)


def plot_roc_curve(truth, positive, path) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    if positive is None:
        figure, axes = plt.subplots(figsize=(5, 4))
        axes.text(0.5, 0.5, "no probabilities: no ROC curve", ha="center")
        axes.set_axis_off()
    else:
        figure = RocCurveDisplay.from_predictions(truth, positive, plot_chance_level=True).figure_
        figure.axes[0].set_title("ROC curve (validation)")
    _save(figure, path)


def plot_feature_importance(model, path) -> None:
    """Coefficients of a linear model or importances of a tree ensemble, by feature."""
    import matplotlib.pyplot as plt

    estimator = model[-1]
    weights = getattr(estimator, "feature_importances_", None)
    label = "importance"
    if weights is None and hasattr(estimator, "coef_"):
        weights, label = np.ravel(estimator.coef_[0]), "coefficient"
    figure, axes = plt.subplots(figsize=(6, 4))
    if weights is None:
        axes.text(0.5, 0.5, f"{type(estimator).__name__} exposes no importances", ha="center")
        axes.set_axis_off()
    else:
        names = model[:-1].get_feature_names_out()
        order = np.argsort(np.abs(weights))
        axes.barh(np.asarray(names)[order], np.asarray(weights)[order])
        axes.set_xlabel(label)
        axes.set_title(f"Feature {label}s")
    _save(figure, path)


def _save(figure, path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
