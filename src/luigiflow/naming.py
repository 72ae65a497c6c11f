"""A run name a person can read in a list of runs: what was trained, and what changed since
the experiment's previous run (`LogisticRegression Trainer.seed=3`), instead of MLflow's
random words. `[RunConfig] run_name` wins when set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

NOT_COMPARED = ("RunConfig.", "Sweep.", "PathConfig.")  # how a run is made, not what it is
SHOWN, VALUE_CHARACTERS = 2, 24


def readable_name(client: MlflowClient, experiment_id: str, params: Mapping[str, str]) -> str:
    """The estimator's class (or the task the run builds), then the values that differ from
    the experiment's newest run: the first two, and how many more. `params`: the config as
    the run logs it (`Section.key` -> text, secrets masked)."""
    what = estimator_class(params) or params.get("RunConfig.task", "run")
    compared = {k: v for k, v in params.items() if not k.startswith(NOT_COMPARED)}
    changed = _changes(client, experiment_id, compared)
    shown = [f"{key}={_short(value)}" for key, value in changed[:SHOWN]]
    more = [f"+{len(changed) - SHOWN} more"] if len(changed) > SHOWN else []
    return " ".join([what, *shown, *more])


def estimator_class(params: Mapping[str, object]) -> str:
    """The class of the first `estimator` (`Trainer.estimator` in a config) of `params`
    (`sklearn.linear_model.Ridge`: Ridge); "" if none."""
    estimator = next(
        (str(v) for k, v in params.items() if k.rpartition(".")[2] == "estimator" and v), ""
    )
    return estimator.rpartition(".")[2]


def _changes(client: MlflowClient, experiment_id: str, params: Mapping[str, str]) -> list:
    """(key, value) of this config that the experiment's newest run had otherwise; the
    estimator itself is in the name already."""
    newest = client.search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    if not newest:
        return []
    before = newest[0].data.params
    return [
        (key, value)
        for key, value in params.items()
        if key in before and before[key] != value and not key.endswith(".estimator")
    ]


def _short(value: str) -> str:
    return value if len(value) <= VALUE_CHARACTERS else value[: VALUE_CHARACTERS - 1] + "…"
