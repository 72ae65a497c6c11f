"""The MLflow side of an invocation: the store, the experiment, and the run's whole life.

One run per invocation. It is created only after the configuration is valid, records what
makes the result reproducible (config, git state, command line, versions), and always ends
FINISHED, FAILED or KILLED: a runner that exits never leaves it RUNNING, and runs left RUNNING
by a runner that was killed outright are marked KILLED by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import toml
from mlflow import MlflowClient
from mlflow.entities import Experiment, Param, RunTag
from mlflow.exceptions import MlflowException

from luigiflow.provenance import git_state
from luigiflow.redact import Redactor, redact_uri
from luigiflow.settings import Settings
from luigiflow.targets import TaskFolder, local_path
from luigiflow.task import REASON_TAG, REUSED_TAG, library_versions

if TYPE_CHECKING:
    from luigiflow.plan import Plan

HOST_TAG, PID_TAG, PROCESS_START_TAG = "luigiflow.host", "luigiflow.pid", "luigiflow.process_start"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
REPAIR_COMMAND = "python src/runner.py --repair-store"


class StoreMoved(Exception):
    """The embedded store records artifact folders at a path that no longer exists."""


@contextmanager
def store_lock(settings: Settings) -> Iterator[None]:
    """Serialize store creation and experiment set-up between runners started at once.

    Two runners creating a fresh SQLite store (or the same experiment) together race on the
    schema migration; a file lock beside the database makes the second wait for the first.
    """
    if not settings.embedded_store:
        yield
        return
    db = Path(settings.tracking_uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment(client: MlflowClient, name: str, settings: Settings) -> Experiment:
    """Get or create the experiment; in the embedded store its artifacts go under the
    project's artifact root (MLflow's own default is `./mlruns` of whatever directory the
    first run happened to start in)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if settings.embedded_store:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
            location = str(settings.artifact_root / slug)
            suffix = 1
            while Path(location).exists():
                suffix += 1
                location = str(settings.artifact_root / f"{slug}-{suffix}")
        with contextlib.suppress(MlflowException):  # created meanwhile by another runner
            # The kind makes the MLflow UI open the experiment as model training, not GenAI.
            client.create_experiment(
                name,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: "custom_model_development"},
            )
        found = client.get_experiment_by_name(name)
    if found.lifecycle_stage != "active":
        raise MlflowException(
            f"experiment '{name}' is deleted: restore it (mlflow experiments restore "
            f"--experiment-id {found.experiment_id}) or choose another experiment_name"
        )
    check_location(found.artifact_location, settings)
    return found


def check_location(uri: str, settings: Settings) -> None:
    """Refuse to write into (or read from) an artifact folder of a store that was moved."""
    path = local_path(uri)
    if path is None or not settings.embedded_store or path.exists():
        return
    try:
        path.relative_to(settings.artifact_root)
        return  # under our own artifact root: simply not created yet
    except ValueError:
        pass
    raise StoreMoved(
        f"the tracking store records artifacts at {path}, which no longer exists: the "
        f"project folder was probably moved (artifacts are now under {settings.artifact_root}). "
        f"Repair the store with: {REPAIR_COMMAND}"
    )


def repair_store(settings: Settings) -> list[tuple[str, str]]:
    """Rewrite moved artifact locations in the embedded store to the current artifact root.

    Each experiment's folder is looked up by name under the current root; returns the
    (old, new) prefixes rewritten.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(settings.tracking_uri)
    columns = {
        "experiments": ["artifact_location"],
        "runs": ["artifact_uri"],
        "logged_models": ["artifact_location"],
        "model_versions": ["source", "storage_location"],
    }
    rewritten = []
    with engine.begin() as db:
        locations = db.execute(
            sqlalchemy.text("SELECT artifact_location FROM experiments")
        ).scalars()
        for old in list(locations):
            path = local_path(old or "")
            if path is None or path.exists():
                continue
            new = settings.artifact_root / path.name
            if not new.exists():
                continue
            old_prefix = old.removesuffix("/")
            new_prefix = str(new) if local_path(old) == Path(old) else new.as_uri()
            for table, cols in columns.items():
                for col in cols:
                    db.execute(
                        sqlalchemy.text(
                            f"UPDATE {table} SET {col} = :new || substr({col}, :n) "
                            f"WHERE {col} = :old OR {col} LIKE :like"
                        ),
                        {
                            "new": new_prefix,
                            "n": len(old_prefix) + 1,
                            "old": old_prefix,
                            "like": old_prefix + "/%",
                        },
                    )
            rewritten.append((old_prefix, new_prefix))
    return rewritten


def _process_start(pid: int) -> str:
    """When a process started (from /proc), so a recycled pid is not taken for the runner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def mark_abandoned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose runner process is gone (`kill -9`)."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    )
    killed = []
    for run in runs:
        pid = int(run.data.tags.get(PID_TAG, "0") or 0)
        if (
            pid
            and _process_start(pid)
            and _process_start(pid) == run.data.tags.get(PROCESS_START_TAG)
        ):
            continue  # still running
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run.info.run_id)
    return killed


def start_run(
    client: MlflowClient,
    experiment_id: str,
    run_config: Mapping[str, object],
    resolved: Mapping[str, Mapping[str, object]],
    redactor: Redactor,
    project_root: Path,
    argv: list[str],
    extra_tags: Mapping[str, str] | None = None,
    adopt: str | None = None,
) -> str:
    """Create the run (or adopt `adopt`, one that `mlflow run` started) and record the config,
    the git state, the command line and versions."""
    tags = {str(k): str(v) for k, v in dict(run_config.get("tags") or {}).items()}
    tags.update(extra_tags or {})
    tags.update(
        {
            "mlflow.note.content": str(run_config.get("description", "")),
            "mlflow.source.name": "src/runner.py",
            "mlflow.source.type": "LOCAL",
            "mlflow.user": getpass.getuser(),
            "luigiflow.task": str(run_config["task"]),
            "luigiflow.command": " ".join(redactor.argv(["python", *argv])),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            PROCESS_START_TAG: _process_start(os.getpid()),
            **{f"luigiflow.version.{k}": v for k, v in library_versions().items()},
        }
    )
    git = git_state(project_root)
    if git is not None:
        tags.update(
            {"mlflow.source.git.commit": git.commit, "luigiflow.git.dirty": str(git.dirty).lower()}
        )
    tags = {k: redactor.value(k, v) for k, v in tags.items()}

    run_name = str(run_config.get("run_name") or "") or None
    if adopt:
        if run_name:
            tags["mlflow.runName"] = run_name
        tags.pop("mlflow.source.name")  # `mlflow run` recorded the project as the source
        tags.pop("mlflow.source.type")
        client.log_batch(adopt, tags=[RunTag(k, v) for k, v in tags.items()])
        run_id = adopt
    else:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    safe = {section: redactor.mapping(values) for section, values in resolved.items()}
    params = [
        Param(f"{s}.{k}", _param_text(v)) for s, values in safe.items() for k, v in values.items()
    ]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_text(run_id, toml.dumps(safe), "config/luigi.toml")
    if git is not None and git.dirty:
        client.log_text(run_id, redactor.text(git.diff), "git/diff.patch")
    return run_id


def _param_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def plan_tags(plan: Plan) -> dict[str, str]:
    """Tags for what the run builds on: where reused outputs come from (and the runs they
    belong to), accepted [PathConfig] mismatches, and why each task runs."""
    tags = {REUSED_TAG.format(f): s for f, s in {**plan.reused, **plan.copied}.items()}
    tags.update({REASON_TAG.format(f): reason for f, reason in plan.reasons.items()})
    tags.update({f"luigiflow.reuse.mismatch.{f}": d for f, d in plan.mismatches.items()})
    sources = [TaskFolder.from_source(s) for s in {**plan.reused, **plan.copied}.values()]
    upstream_runs = sorted({folder.run_id for folder in sources if folder.run_id})
    if upstream_runs:
        tags["luigiflow.upstream_runs"] = ",".join(upstream_runs)
    return tags


def record_plan(client: MlflowClient, run_id: str, plan: Plan, tracking_uri: str, ui: str) -> None:
    """The input files as MLflow datasets, and an index a person can follow to reused files."""
    _log_input_files(client, run_id, plan)
    if plan.reused or plan.copied:
        client.log_dict(run_id, _reuse_index(client, plan, tracking_uri, ui), "reused_outputs.json")


def _reuse_index(client: MlflowClient, plan: Plan, tracking_uri: str, ui: str) -> dict:
    index = {}
    for family, source in {**plan.reused, **plan.copied}.items():
        folder = TaskFolder.from_source(source)
        entry = {"source": source, "copied": family in plan.copied, "cached": family in plan.cached}
        if folder.run_id:
            experiment_id = client.get_run(folder.run_id).info.experiment_id
            entry["outputs"] = {
                name: run_url(
                    tracking_uri,
                    experiment_id,
                    folder.run_id,
                    ui,
                    f"/artifacts/{family}/{filename}",
                )
                for name, filename in plan.task(family).outputs.items()
            }
        index[family] = entry
    return index


def _log_input_files(client: MlflowClient, run_id: str, plan: Plan) -> None:
    """The input files the pipeline reads, as MLflow dataset inputs carrying their hashes."""
    from luigi.configuration import get_config
    from mlflow.entities import Dataset, DatasetInput, InputTag

    input_dir = Path(get_config().get("PathConfig", "input"))
    inputs = {}
    for task in plan.tasks:
        for filename, digest in plan.fingerprints.of(task).inputs.items():
            source = json.dumps({"uri": (input_dir / filename).as_uri(), "sha256": digest})
            dataset = Dataset(filename, digest[:32], "local", source)
            inputs[filename] = DatasetInput(
                dataset, [InputTag("mlflow.data.context", task.task_family)]
            )
    if inputs:
        client.log_inputs(run_id, datasets=list(inputs.values()))


def run_url(
    tracking_uri: str, experiment_id: str, run_id: str, ui_address: str, path: str = ""
) -> str:
    """The run's page in the MLflow UI (the embedded store is served by `make ui`), or one of
    its artifacts. The UI opens on its GenAI side unless told this is model training."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ui_address
    page = f"{redact_uri(base).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}{path}?workflowType=machine_learning"
