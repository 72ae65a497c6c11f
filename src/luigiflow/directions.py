"""Which way a metric is better: errors and losses lower, every other score higher.

One rule for the Evaluator's criteria and a sweep's `select`, so that `rmse` or a custom
`median_absolute_error` needs no `direction = "lower"` anywhere, and `r2` or `f1_macro` none
either.
"""

from __future__ import annotations

ERRORS = ("rmse", "mae", "mape", "mse", "msle", "error", "loss")  # names ending so are errors


def better(metric: str) -> str:
    """`lower` for an error or a loss (`rmse`, `cv_rmse`, `log_loss`, `rmsle`), else `higher`."""
    return "lower" if metric.lower().endswith(ERRORS) else "higher"
