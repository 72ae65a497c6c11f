"""Which way a metric is better: errors and losses lower, every other score higher.

One rule for the Evaluator's criteria and a sweep's `select`, so that `rmse` or a custom
`median_absolute_error` needs no `direction = "lower"` anywhere, and `r2` or `f1_macro` none
either.
"""

from __future__ import annotations

ERRORS = ("rmse", "mae", "mape", "mse", "msle", "error", "error_rate", "loss", "deviance")


def better(metric: str) -> str:
    """`lower` for an error or a loss (`rmse`, `cv_rmse`, `log_loss`, `rmsle`, and their
    `_std`), else `higher`; scikit-learn's negated errors (`neg_...`) are higher."""
    name = metric.lower().removesuffix("_std")
    error = name.endswith(ERRORS)
    return "higher" if error == name.startswith("neg_") else "lower"
