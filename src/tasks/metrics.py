"""Custom validation metrics: plain functions, named in `[Evaluator] custom_metrics`.

Each takes the true values, the predicted values and the predicted probabilities: of the
positive class for a binary target, a column per class (in the model's order of classes) for
a multiclass one, None for a regression or an estimator that gives none. It returns a number.
Add one here, name it in luigi.toml, and the Evaluator logs it and lets `validation_criteria`
use it; a name ending in `error` or `loss` (or `rmse`, `mae`, `msle`...) is an error, so its
criteria are "at most" unless they say `direction`. `@applies_to(...)` names the problem
types a metric makes sense for, so that naming it for another is refused before the run.
"""

import numpy as np


def applies_to(*problem_types: str):
    """Mark a metric as meant for these `[Dataset] problem_type`s only."""

    def mark(metric):
        metric.problem_types = problem_types
        return metric

    return mark


@applies_to("binary", "multiclass")
def balanced_accuracy(y_true, y_pred, y_proba) -> float:
    """Accuracy averaged over the classes: a model that always says the commonest class
    scores 1 / (number of classes)."""
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y_true, y_pred)


@applies_to("binary")
def predicted_positive_rate(y_true, y_pred, y_proba) -> float:
    """Share of rows predicted positive (the second of the two labels in sorted order, 1 of
    0 and 1); far from the true rate means a biased model."""
    return float(np.mean(np.asarray(y_pred) == np.unique(y_true)[-1]))


@applies_to("regression")
def rmsle(y_true, y_pred, y_proba) -> float:
    """Root mean squared error of the logarithms, Kaggle's House Prices metric: an error of
    10% costs the same on a cheap house as on a dear one. Negative predictions count as 0;
    the true values must be above -1."""
    from sklearn.metrics import root_mean_squared_log_error

    return root_mean_squared_log_error(y_true, np.clip(y_pred, 0, None))
