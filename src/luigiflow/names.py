"""What a task and the machinery share is named here, once: run tags, artifact paths, exit
statuses, which way a metric is better, and the readable name of a run.

Kept in one place so that the module that writes a tag and the modules that read it can never
disagree, and so that no module has to import another just to learn a name. Nothing heavy is
imported: `luigiflow` hands these names out before luigi or mlflow are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Exit statuses of the runner (and of a worker attached to a run).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

VERBOSE_VARIABLE = "LUIGIFLOW_VERBOSE"  # set by -v, for the progress of forked workers too

# The one tag per task: the task finished in the run, with outputs of this fingerprint whose
# manifest has this digest ("<fingerprint>:<manifest sha256>"). The cache searches it (LIKE
# '<fingerprint>:%'), and reuse checks the manifest against it: the tracking store vouches for
# the artifact store. Everything else about a task is in its record (`record_path`).
FINGERPRINT_TAG = "luigiflow.task.{}.fingerprint"
BROKEN_TAG = "luigiflow.task.{}.broken"  # outputs that failed verification: never offered again
# Runs made before the digest joined the fingerprint tag kept it in a tag of its own.
OLD_MANIFEST_TAG = "luigiflow.task.{}.manifest_sha256"


def fingerprint_tag_value(fingerprint: str, manifest_digest: str) -> str:
    return f"{fingerprint}:{manifest_digest}"


def recorded_manifest_digest(tags: dict[str, str], family: str) -> str | None:
    """The manifest digest a run recorded for `family`; None if the task did not finish."""
    value = tags.get(FINGERPRINT_TAG.format(family), "")
    return value.partition(":")[2] or tags.get(OLD_MANIFEST_TAG.format(family))


# On a run: the task it builds; on a Logged Model: the task and the output whose files it is.
TASK_TAG, OUTPUT_TAG = "luigiflow.task", "luigiflow.output"
# Tags on a run: whether its code was dirty, the run whose config it repeats (`--from-run`).
GIT_DIRTY_TAG = "luigiflow.git.dirty"
FROM_RUN_TAG = "luigiflow.from_run"
# A conclusion of a task (`PipelineTask.conclusions`), tagged on the run: luigiflow.<key>.
CONCLUSION_TAG = "luigiflow.{}"

# Tag on a sweep's parent run: the swept keys and values, in words.
SWEEP_TAG = "luigiflow.sweep"
SWEEP_CHILD_TAG = "luigiflow.sweep.child"  # on each child: its values, in words
# On the parent: the metric the children are compared on, and the winners (run ids, or none).
SWEEP_SELECT_TAG = "luigiflow.sweep.select"
SWEEP_BEST_CHILD_TAG = "luigiflow.sweep.best_child"
SWEEP_BEST_VALIDATED_CHILD_TAG = "luigiflow.sweep.best_validated_child"

# Tag on an experiment: the MLflow UI opens it as model training, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"

# Tag on a registered model version: the fingerprint of the task that made the model.
MODEL_FINGERPRINT_TAG = "luigiflow.fingerprint"
# A tag the registering task gives a version (`registry.register(tags=...)`): luigiflow.<key>.
VERSION_TAG = "luigiflow.{}"
# Tags on a registered model version: the kind of model it is (`models.ModelSchema`), which
# the version taking its alias must share. The inputs are JSON, {column: MLflow type}.
SCHEMA_INPUTS_TAG = "luigiflow.schema.inputs"
SCHEMA_PROBLEM_TAG = "luigiflow.schema.problem_type"
SCHEMA_TARGET_TAG = "luigiflow.schema.target"
# On a version that took the alias from another kind of model ([Register] replace_schema):
# which version it replaced, and what differed.
SCHEMA_REPLACED_TAG = "luigiflow.schema.replaced"

# Artifacts of a run.
CONFIG_ARTIFACT = "config/luigi.toml"  # the resolved config, loadable with --config
CONTEXT_ARTIFACT = "luigiflow/context.json"  # the run context, written before any task
RECORDS_FOLDER = "luigiflow/tasks"  # one record per task that ran: <Task>.json
ERRORS_FOLDER = "errors"  # <Task>.txt: the traceback of a failed task
REPORT_ARTIFACT = "report.html"
RUNNER_ARTIFACT = "luigiflow/runner.json"  # the process that owns the run, and its heartbeat

# Files inside a task's output folder.
MANIFEST = "_manifest.json"  # written last: the outputs are complete
CARD = "_card.html"  # the task's page in the run report


def record_path(family: str) -> str:
    return f"{RECORDS_FOLDER}/{family}.json"


# What a user's task concludes and the machinery reads, exported by `luigiflow` (`from
# luigiflow import VALIDATED`): a task that renamed its own copy would silently break
# `--require-validated` and a sweep's choice of its validated winner.
VALIDATED, REJECTED = "VALIDATED", "REJECTED"  # an evaluation's verdicts
# Conclusion keys (`PipelineTask.conclusions`), each tagged on the run as luigiflow.<key>: the
# verdict, the criteria it failed, what became of the model's registration.
VALIDATION, VALIDATION_FAILED, REGISTRATION = "validation", "validation.failed", "registration"
VALIDATION_TAG = CONCLUSION_TAG.format(VALIDATION)  # a run's verdict, as its Evaluator concluded
# A tag the registering task gives a version: the run that judged the model. A sweep moves the
# alias only to a better model, and compares the holder where that run judged it.
REGISTERED_BY_RUN = "registered_by_run"


class Registration(TypedDict):
    """A registered version, as `registry.register` returns it to the registering task."""

    version: int
    new: bool  # False: this fingerprint had a version already, which is the one returned
    uri: str  # models:/<name>/<version>, or models:/<name>@<alias> once the alias points at it
    source: str
    fingerprint: str
    alias_moved: bool
    alias_kept_because: str  # why the alias stays at its holder ("" when it moved)


# Which way a metric is better: errors and losses lower, every other score higher. One rule
# for the Evaluator's criteria and a sweep's `select`, so that `rmse` or a custom
# `median_absolute_error` needs no `direction = "lower"` anywhere, and `r2` or `f1_macro` none
# either.
ERRORS = ("rmse", "mae", "mape", "mse", "msle", "error", "error_rate", "loss", "deviance")


def better(metric: str) -> str:
    """`lower` for an error or a loss (`rmse`, `cv_rmse`, `log_loss`, `rmsle`, and their
    `_std`), else `higher`; scikit-learn's negated errors (`neg_...`) are higher."""
    name = metric.lower().removesuffix("_std")
    error = name.endswith(ERRORS)
    return "higher" if error == name.startswith("neg_") else "lower"


# A run name a person can read in a list of runs: what was trained, and what changed since
# the experiment's previous run (`LogisticRegression Trainer.seed=3`), instead of MLflow's
# random words. `[RunConfig] run_name` wins when set.
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
