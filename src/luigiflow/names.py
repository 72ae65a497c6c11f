"""Names that several modules share: run tags and artifact paths.

Kept in one place so that the module that writes a tag and the modules that read it can never
disagree, and so that no module has to import another just to learn a name.
"""

# Exit statuses of the runner (and of a worker attached to a run).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

# Tags on the run, one set per task ({} is the task family).
STATUS_TAG = "luigiflow.task.{}.status"
DURATION_TAG = "luigiflow.task.{}.duration_s"
USER_CODE_TAG = "luigiflow.task.{}.user_code_s"
REUSED_TAG = "luigiflow.task.{}.reused_from"
REASON_TAG = "luigiflow.task.{}.why_run"
FINGERPRINT_TAG = "luigiflow.task.{}.fingerprint"
MANIFEST_TAG = "luigiflow.task.{}.manifest_sha256"  # the digest of its outputs' manifest
BROKEN_TAG = "luigiflow.task.{}.broken"  # outputs that failed verification: never offered again

# Tags on the run that say which process owns it (for finding runs whose runner died).
HOST_TAG = "luigiflow.host"
PID_TAG = "luigiflow.pid"
PROCESS_START_TAG = "luigiflow.process_start"
HEARTBEAT_TAG = "luigiflow.heartbeat"  # seconds since the epoch, refreshed while it runs
HEARTBEAT_INTERVAL_TAG = "luigiflow.heartbeat_interval_s"

# Tag on a sweep's parent run: the swept keys and values, in words.
SWEEP_TAG = "luigiflow.sweep"
SWEEP_CHILD_TAG = "luigiflow.sweep.child"  # on each child: its values, in words

# Tag on an experiment: the MLflow UI opens it as model training, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"

# Tag on a registered model version: the fingerprint of the task that made the model.
MODEL_FINGERPRINT_TAG = "luigiflow.fingerprint"

# Artifacts of a run.
CONFIG_ARTIFACT = "config/luigi.toml"  # the resolved config, loadable with --config
CONTEXT_ARTIFACT = "luigiflow/context.json"  # the run context, written before any task
RECORDS_FOLDER = "luigiflow/tasks"  # one record per task that ran: <Task>.json
ERRORS_FOLDER = "errors"  # <Task>.txt: the traceback of a failed task
REPORT_ARTIFACT = "report.html"

# Files inside a task's output folder.
MANIFEST = "_manifest.json"  # written last: the outputs are complete
CARD = "_card.html"  # the task's page in the run report


def record_path(family: str) -> str:
    return f"{RECORDS_FOLDER}/{family}.json"
