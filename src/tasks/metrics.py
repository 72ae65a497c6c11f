"""Custom validation metrics: plain functions, named in `[Evaluator] custom_metrics`.

Each takes the true labels, the predicted labels and the predicted probability of the positive
class (None when the estimator gives none) and returns a number. Add one here, name it in
luigi.toml, and the Evaluator logs it and lets `validation_criteria` use it.
"""

import numpy as np


def balanced_accuracy(y_true, y_pred, y_proba) -> float:
    """Accuracy averaged over the classes: a model that always says "died" scores 0.5."""
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y_true, y_pred)


def predicted_survival_rate(y_true, y_pred, y_proba) -> float:
    """Share of passengers predicted to survive; far from the true rate means a biased model."""
    return float(np.mean(y_pred))
