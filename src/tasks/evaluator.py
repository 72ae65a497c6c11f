"""Judge the model on the validation set and decide whether it may be registered."""

from __future__ import annotations

import math
from collections.abc import Mapping

import luigi
import numpy as np

from luigiflow import REJECTED, VALIDATED, VALIDATION, VALIDATION_FAILED, PipelineTask, requires
from luigiflow.names import better
from tasks import metrics
from tasks.splitter import Splitter
from tasks.trainer import Trainer, probability_columns

STANDARD_METRICS = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    "multiclass": ("accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),  # mape only where the target has no zeros
}
PLOTS = {
    "binary": {"confusion_matrix": "confusion_matrix.png", "roc_curve": "roc_curve.png"},
    "multiclass": {"confusion_matrix": "confusion_matrix.png"},
    "regression": {"predicted_vs_actual": "predicted_vs_actual.png", "residuals": "residuals.png"},
}
PROBABILITY_METRICS = ("roc_auc", "roc_auc_ovr", "log_loss")
NOT_COMPUTED = {  # why a standard metric can be missing from a run's values
    "mape": "it divides by the true values, and one of the validation set is 0",
    **{name: "the estimator gives no probabilities" for name in PROBABILITY_METRICS},
}


@requires(Splitter, Trainer)
class Evaluator(PipelineTask):
    """Standard and custom metrics on the validation set, checked against the criteria.

    The metrics, plots and worst rows follow `[Dataset] problem_type`: classes are judged by
    accuracy, F1, ROC AUC and a confusion matrix; a regression by its errors (RMSE, MAE, R²,
    MAPE) and plots of predicted against actual values and of the residuals.
    """

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

    @property
    def outputs(self) -> dict[str, str]:
        return {
            "evaluation": "evaluation.json",
            "predictions": "validation_predictions.parquet",
            **PLOTS[self.dataset.problem_type],
            "feature_importance": "feature_importance.png",
        }

    def metric_names(self) -> tuple[str, ...]:
        return (*STANDARD_METRICS[self.dataset.problem_type], *self.custom_metrics)

    def validate(self) -> dict[str, str]:
        problem = self.dataset.problem_type
        for name in self.custom_metrics:
            metric = getattr(metrics, name, None)
            if not callable(metric):
                return {"custom_metrics": f"'{name}' is not a function in src/tasks/metrics.py"}
            meant = getattr(metric, "problem_types", None)
            if meant is not None and problem not in meant:
                return {
                    "custom_metrics": f"'{name}' is a metric for {' or '.join(meant)} "
                    f"problems; [Dataset] problem_type is {problem}"
                }
        known = self.metric_names()
        for criterion in self.validation_criteria:
            if error := criterion_problem(criterion, known, problem):
                return {"validation_criteria": error}
        trainer = self.requires()["Trainer"]
        for name in {c["metric"] for c in self.validation_criteria} & set(PROBABILITY_METRICS):
            if trainer.gives_probabilities() is False:
                return {
                    "validation_criteria": f"{name} needs probabilities, which "
                    f"{trainer.estimator_path} does not give with these estimator_params"
                }
        return {}

    def run(self) -> None:
        data = self.dataset
        validation, model = self.load("validation"), self.load("model")
        truth = validation[data.target_column].to_numpy()
        features = validation.drop(columns=[data.id_column, data.target_column])
        predicted = np.asarray(model.predict(features))
        estimator = model.get_raw_model()
        classes = list(getattr(estimator, "classes_", []))
        proba = estimator.predict_proba(features) if hasattr(estimator, "predict_proba") else None

        if data.is_classification:
            values = classification_metrics(truth, predicted, proba, classes, data.problem_type)
            given = proba[:, 1] if proba is not None and len(classes) == 2 else proba
        else:
            values, given = regression_metrics(truth, predicted), None
        for name in self.custom_metrics:
            values[name] = float(getattr(metrics, name)(truth, predicted, given))
        checks = [check(criterion, values) for criterion in self.validation_criteria]
        verdict = VALIDATED if all(c["passed"] for c in checks) else REJECTED
        self.log_metrics(**values)
        self.save("evaluation", {"verdict": verdict, "metrics": values, "criteria": checks})

        scored = validation.assign(predicted=predicted, **probability_columns(classes, proba))
        if not data.is_classification:
            scored = scored.assign(residual=predicted - truth, error=np.abs(predicted - truth))
        elif proba is not None:  # how far from certain the model was of the true class
            truth_index = np.searchsorted(classes, truth)
            scored = scored.assign(error=1 - proba[np.arange(len(truth)), truth_index])
        else:
            scored = scored.assign(error=(truth != predicted).astype(float))
        self.save("predictions", scored)
        if data.is_classification:
            plot_confusion_matrix(truth, predicted, classes, self.output_path("confusion_matrix"))
            if data.problem_type == "binary":
                positive = proba[:, 1] if proba is not None else None
                plot_roc_curve(truth, positive, classes, self.output_path("roc_curve"))
        else:
            plot_regression(truth, predicted, self.output_path("predicted_vs_actual"), "actual")
            plot_regression(truth, predicted, self.output_path("residuals"), "residual")
        plot_feature_importance(estimator, self.output_path("feature_importance"))

        self.add_to_card("Metrics against the validation criteria", criteria_table(values, checks))
        worst = "largest absolute errors" if not data.is_classification else "least certain"
        self.add_to_card(
            f"Worst-predicted validation rows: {worst} ({verdict})",
            scored.nlargest(self.worst_rows, "error"),
        )

    def conclusions(self) -> dict[str, str]:
        evaluation = self.read_output("evaluation")
        return {VALIDATION: evaluation["verdict"], VALIDATION_FAILED: failed(evaluation)}


def failed(evaluation: Mapping) -> str:
    """The failed criteria of an evaluation.json, with their values: `accuracy 0.81 < 0.9`."""
    return "; ".join(c["text"] for c in evaluation["criteria"] if not c["passed"])


def criterion_problem(
    criterion: object, known: tuple[str, ...], problem: str = "binary"
) -> str | None:
    """What is wrong with one `validation_criteria` entry, or None."""
    example = f'{{ metric = "{known[0]}", threshold = 0.75 }}'
    if not isinstance(criterion, Mapping):
        return f"each criterion is a table like {example}, not {criterion!r}"
    unknown = set(criterion) - {"metric", "threshold", "direction"}
    if unknown:
        return f"unknown key {sorted(unknown)[0]!r}; a criterion has metric, threshold, direction"
    name = criterion.get("metric")
    if name not in known:
        other = [p for p, names in STANDARD_METRICS.items() if name in names and p != problem]
        why = f" (a {other[0]} metric; [Dataset] problem_type is {problem})" if other else ""
        return f"unknown metric {name!r}{why}; known metrics: {', '.join(known)}"
    threshold = criterion.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return f"the threshold of {name} must be a number, not {threshold!r}"
    if not math.isfinite(threshold):  # nan: no model ever passes; inf: nor fails
        return f"the threshold of {name} must be a finite number, not {threshold!r}"
    if criterion.get("direction", "higher") not in ("higher", "lower"):
        return f"direction of {name} is 'higher' (at least) or 'lower' (at most)"
    return None


def check(criterion: Mapping, values: Mapping[str, float]) -> dict:
    name, threshold = criterion["metric"], float(criterion["threshold"])
    direction = criterion.get("direction") or better(name)  # errors: lower, by default
    value = values.get(name, float("nan"))
    passed = bool(value >= threshold if direction == "higher" else value <= threshold)
    sign = (">=" if passed else "<") if direction == "higher" else ("<=" if passed else ">")
    text = f"{name} {value:.4f} {sign} {threshold:g}"
    if name not in values:
        text = f"{name} was not computed: {NOT_COMPUTED.get(name, 'no value')}"
    return {
        "metric": name,
        "value": value,
        "threshold": threshold,
        "direction": direction,
        "passed": passed,
        "text": text,
    }


def classification_metrics(
    truth, predicted, proba, classes, problem: str = "binary"
) -> dict[str, float]:
    """Accuracy and F1 (of the positive class for two classes; macro and weighted averages
    over more), and, with probabilities, ROC AUC (one class against the rest for more than
    two) and log loss."""
    from sklearn import metrics as m

    values = {"accuracy": m.accuracy_score(truth, predicted)}
    if problem == "binary":
        values.update(
            precision=m.precision_score(truth, predicted, pos_label=classes[-1], zero_division=0),
            recall=m.recall_score(truth, predicted, pos_label=classes[-1], zero_division=0),
            f1=m.f1_score(truth, predicted, pos_label=classes[-1], zero_division=0),
        )
        if proba is not None:
            values["roc_auc"] = m.roc_auc_score(truth, proba[:, 1])
    else:
        for average in ("macro", "weighted"):
            values[f"f1_{average}"] = m.f1_score(
                truth, predicted, labels=classes, average=average, zero_division=0
            )
        if proba is not None:
            values["roc_auc_ovr"] = m.roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
    if proba is not None:
        values["log_loss"] = m.log_loss(truth, proba, labels=classes)
    return {name: float(value) for name, value in values.items()}


def regression_metrics(truth, predicted) -> dict[str, float]:
    """Root mean squared and mean absolute error, R², and the mean absolute percentage error
    where no true value is zero (it divides by them)."""
    from sklearn import metrics as m

    values = {
        "rmse": m.root_mean_squared_error(truth, predicted),
        "mae": m.mean_absolute_error(truth, predicted),
        "r2": m.r2_score(truth, predicted),
    }
    if np.all(truth != 0):
        values["mape"] = m.mean_absolute_percentage_error(truth, predicted)
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


def plot_confusion_matrix(truth, predicted, classes, path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    # Every class of the model has a row and a column, even one the validation set lacks.
    display = ConfusionMatrixDisplay.from_predictions(
        truth, predicted, labels=classes or None, colorbar=False
    )
    display.ax_.set_title("Confusion matrix (validation)")
    _save(display.figure_, path)


def plot_roc_curve(truth, positive, classes, path) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    if positive is None:
        figure, axes = plt.subplots(figsize=(5, 4))
        axes.text(0.5, 0.5, "no probabilities: no ROC curve", ha="center")
        axes.set_axis_off()
    else:
        figure = RocCurveDisplay.from_predictions(
            truth, positive, pos_label=classes[-1], plot_chance_level=True
        ).figure_
        figure.axes[0].set_title("ROC curve (validation)")
    _save(figure, path)


def plot_regression(truth, predicted, path, against: str) -> None:
    """Predicted against actual values (`actual`: on the diagonal is perfect), or the
    residuals against the predicted values (`residual`: a pattern means a missed effect)."""
    from sklearn.metrics import PredictionErrorDisplay

    kind = "actual_vs_predicted" if against == "actual" else "residual_vs_predicted"
    display = PredictionErrorDisplay.from_predictions(
        truth, predicted, kind=kind, subsample=2000, random_state=0
    )
    title = "Predicted against actual" if against == "actual" else "Residuals"
    display.ax_.set_title(f"{title} (validation)")
    _save(display.figure_, path)


def plot_feature_importance(model, path, shown: int = 20) -> None:
    """Coefficients of a linear model or importances of a tree ensemble, by feature: the
    `shown` largest in size (one-hot encoding makes hundreds of features of a wide table)."""
    import matplotlib.pyplot as plt

    estimator = model[-1]
    weights = getattr(estimator, "feature_importances_", None)
    label = "importance"
    if weights is None and hasattr(estimator, "coef_"):
        coef = np.atleast_2d(estimator.coef_)
        if len(coef) == 1:  # one target, or the positive class of two
            weights, label = coef[0], "coefficient"
        else:  # a row per class: how much a feature moves any of them
            weights, label = np.abs(coef).mean(axis=0), "mean absolute coefficient"
    figure, axes = plt.subplots(figsize=(6, 4))
    if weights is None:
        axes.text(0.5, 0.5, f"{type(estimator).__name__} exposes no importances", ha="center")
        axes.set_axis_off()
    else:
        names = model[:-1].get_feature_names_out()
        order = np.argsort(np.abs(weights))[-shown:]
        axes.barh(np.asarray(names)[order], np.asarray(weights)[order])
        axes.set_xlabel(label)
        largest = f" (the {shown} largest of {len(weights)})" if len(weights) > shown else ""
        axes.set_title(f"Feature {label}s{largest}")
    _save(figure, path)


def _save(figure, path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
