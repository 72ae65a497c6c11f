"""Names that several modules share: run tags and artifact paths.

Kept in one place so that the module that writes a tag and the modules that read it can never
disagree, and so that no module has to import another just to learn a name.
"""

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


def fingerprint_tag_value(fingerprint: str, manifest_digest: str) -> str:
    return f"{fingerprint}:{manifest_digest}"


def recorded_manifest_digest(tags: dict[str, str], family: str) -> str | None:
    """The manifest digest a run recorded for `family`; None if the task did not finish.
    (Runs made before the digest joined the fingerprint tag kept it in a tag of its own.)"""
    value = tags.get(FINGERPRINT_TAG.format(family), "")
    return value.partition(":")[2] or tags.get(f"luigiflow.task.{family}.manifest_sha256")


# Tag on a sweep's parent run: the swept keys and values, in words.
SWEEP_TAG = "luigiflow.sweep"
SWEEP_CHILD_TAG = "luigiflow.sweep.child"  # on each child: its values, in words

# Tag on an experiment: the MLflow UI opens it as model training, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"

# Tag on a registered model version: the fingerprint of the task that made the model.
MODEL_FINGERPRINT_TAG = "luigiflow.fingerprint"
# Tags on a registered model version: the kind of model it is (`schema.ModelSchema`), which
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
