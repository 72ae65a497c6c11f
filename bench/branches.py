"""The benchmark's branching pipeline: two candidate models fitted side by side on the same
split, then compared. The two branches need nothing of each other, so a second worker (a
second clone, joined with --join) can fit one while the first fits the other.

The harness copies this module into the measured project's src/tasks/.
"""

from __future__ import annotations

import luigi

from luigiflow import PipelineTask, requires
from tasks.trainer import Trainer


class ForestA(Trainer):
    """A random forest: a few seconds of work per fold on the 100k-row data."""

    estimator = luigi.Parameter(default="sklearn.ensemble.RandomForestClassifier")
    estimator_params = luigi.DictParameter(default={"n_estimators": 60, "max_depth": 12})
    cv_folds = luigi.NumericalParameter(default=3, var_type=int, min_value=2, max_value=99)


class ForestB(ForestA):
    """The same forest from another seed: as much work as ForestA."""

    seed = luigi.NumericalParameter(default=1, var_type=int, min_value=0, max_value=2**32)


@requires(ForestA, ForestB)
class Candidates(PipelineTask):
    outputs = {"candidates": "candidates.json"}

    def run(self) -> None:
        self.save("candidates", {"models": ["ForestA", "ForestB"]})
