"""What is logged on a run: created once the configuration is valid (or adopted), given
everything that makes the result reproducible (config, run context, git state, command line,
versions) and what it reuses, its runner's heartbeat kept while it works, reopened by
`--resume`; runs whose runner is gone are marked KILLED, so none stays RUNNING.
"""

from __future__ import annotations

import getpass
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException

from luigiflow import runstate
from luigiflow.caching import code_differences
from luigiflow.config import Config
from luigiflow.names import (
    CONFIG_ARTIFACT,
    FINGERPRINT_TAG,
    GIT_DIRTY_TAG,
    SWEEP_CHILD_TAG,
    SWEEP_TAG,
    TASK_TAG,
    fingerprint_tag_value,
    readable_name,
)
from luigiflow.redact import Redactor, redact_uri
from luigiflow.runstate import COPIED, REUSED, NoContext, RunContext, load
from luigiflow.sourcecode import GitState, git_state, library_versions
from luigiflow.store import client
from luigiflow.targets import TaskFolder, copy_outputs
from luigiflow.values import dumps


def start_run(
    client: MlflowClient,
    experiment_id: str,
    config: Config,
    context: RunContext,
    redactor: Redactor,
    project_root: Path,
    argv: list[str],
    adopt: str | None = None,
) -> str:
    """Create the run (or adopt `adopt`, one that `mlflow run` started) and record the config,
    the git state, the command line, versions and the run context, before any task starts."""
    run_id = _open(
        client, experiment_id, config, context.config, redactor, project_root, argv, adopt
    )
    context.save(run_id)
    return run_id


def start_sweep(
    client: MlflowClient,
    experiment_id: str,
    config: Config,
    resolved: dict[str, dict[str, object]],
    redactor: Redactor,
    project_root: Path,
    argv: list[str],
) -> str:
    """Create a sweep's parent run: the tags of any run, and its config (`resolved`, with the
    [Sweep] section: `--from-run` of the parent runs the sweep again) as params and as file.
    Its children are runs of their own (`start_run`, tagged `mlflow.parentRunId`)."""
    return _open(client, experiment_id, config, resolved, redactor, project_root, argv, sweep=True)


def _open(
    client, experiment_id, config, resolved, redactor, project_root, argv, adopt=None, sweep=False
) -> str:
    """Create (or adopt) the run, named, tagged, with its config and its runner record."""
    git = git_state(project_root)
    tags = _run_tags(config.run, redactor, git)
    params = config_params(resolved, redactor)
    name = str(config.run.get("run_name") or "")
    if not name:
        name = readable_name(client, experiment_id, params)
        name += " (sweep)" if sweep else ""
    if adopt:
        tags["mlflow.runName"] = name
        tags.pop("mlflow.source.name")  # `mlflow run` recorded the project as the source
        client.log_batch(adopt, tags=[RunTag(k, v) for k, v in tags.items()])
        run_id = adopt
    else:
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    _log_config(client, run_id, params, resolved, redactor, git)
    runstate.write_runner_record(run_id, _runner_record(redactor, argv))
    return run_id


def config_params(resolved: Mapping[str, Mapping[str, object]], redactor: Redactor) -> dict:
    """The resolved config as the run's params (`Section.key` -> text, secrets masked)."""
    return {
        f"{section}.{key}": _param_text(value)
        for section, values in resolved.items()
        for key, value in redactor.mapping(values).items()
    }


def _log_config(client: MlflowClient, run_id: str, params, resolved, redactor, git) -> None:
    """The resolved config as params and as `config/luigi.toml`; the diff of a dirty tree."""
    params = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    safe = {section: redactor.mapping(values) for section, values in resolved.items()}
    client.log_text(run_id, dumps(safe), CONFIG_ARTIFACT)
    if git is not None and git.dirty:
        client.log_text(run_id, redactor.text(git.diff), "git/diff.patch")


def _run_tags(
    run_config: Mapping[str, object], redactor: Redactor, git: GitState | None
) -> dict[str, str]:
    """The few tags people search on: the user's own, the task, where the run comes from
    (note, user, source, git state). Who ran it and how is in the runner record; what the
    plan decided is in the run context."""
    tags = {str(k): str(v) for k, v in dict(run_config.get("tags") or {}).items()}
    tags.update(
        {
            "mlflow.note.content": str(run_config.get("description", "")),
            "mlflow.source.name": "src/runner.py",
            "mlflow.user": getpass.getuser(),
            TASK_TAG: str(run_config["task"]),
        }
    )
    if git is not None:
        tags["mlflow.source.git.commit"] = git.commit
        tags[GIT_DIRTY_TAG] = str(git.dirty).lower()
    return {k: str(redactor.value(k, v)) for k, v in tags.items()}


def _runner_record(redactor: Redactor, argv: list[str]) -> runstate.RunnerRecord:
    command = " ".join(redactor.argv(["python", *argv]))
    return runstate.RunnerRecord.of_this_process(command, library_versions())


def resumable(client: MlflowClient, run_id: str) -> str | None:
    """Why run `run_id` cannot be resumed, or None: a FAILED or KILLED run can, and so can a
    RUNNING one whose runner on this host is gone."""
    run = client.get_run(run_id)
    status, tags = run.info.status, run.data.tags
    if SWEEP_TAG in tags:
        return f"run {run_id} is a sweep: run it again with --from-run {run_id}"
    if SWEEP_CHILD_TAG in tags:  # its shared tasks belong to other children
        parent = tags.get("mlflow.parentRunId", "")
        return f"run {run_id} is a sweep's child: run the sweep again with --from-run {parent}"
    if status == "FINISHED":
        return f"run {run_id} FINISHED: nothing to resume (start anew with --from-run {run_id})"
    if status not in ("FAILED", "KILLED", "RUNNING"):
        return f"run {run_id} is {status}"
    if status == "RUNNING":
        record = runstate.read_runner_record(run_id)
        if not runstate.runner_gone(record, run.info.start_time / 1000):
            where = f"pid {record.pid} on {record.host}" if record else "no runner record yet"
            return f"run {run_id} is RUNNING: its runner ({where}) may still be alive"
    return None


def reopen(client: MlflowClient, run_id: str, argv: list[str], redactor: Redactor) -> None:
    """Make an ended run RUNNING again, owned by this process (the runner record says so,
    and keeps the earlier commands); its params stay as logged."""
    status = client.get_run(run_id).info.status
    earlier = runstate.read_runner_record(run_id) or _runner_record(redactor, [])
    command = " ".join(redactor.argv(["python", *argv]))
    runstate.write_runner_record(run_id, earlier.taken_over(command, status))
    client.update_run(run_id, status="RUNNING")


def mark_abandoned_runs(client: MlflowClient, experiment_ids: list[str] | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs (of every experiment, or these) whose runner is gone:
    killed outright on this host, or silent for three heartbeats on another. Best-effort: a
    store that forbids it (another user's run on a server) leaves the run as it is."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    killed = []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'"):
        record = runstate.read_runner_record(run.info.run_id)
        if record is None or not runstate.runner_gone(record, run.info.start_time / 1000):
            continue  # not a runner's run, or its runner is alive
        try:
            client.set_terminated(run.info.run_id, "KILLED")
        except MlflowException:
            logging.warning("could not mark run %s KILLED", run.info.run_id, exc_info=True)
            continue
        killed.append(run.info.run_id)
        try:
            runstate.settle_abandoned(run.info.run_id)
        except Exception:  # the run's status is what counts; its records say so where they can
            logging.warning("could not settle the records of run %s", run.info.run_id)
    return killed


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat in the runner record, every interval, while the run works: how
    runners on other hosts tell a live run from one whose runner died. Only a record of this
    process is refreshed: one that names another (which took the run over) is left alone."""

    def __init__(self, *run_ids: str) -> None:
        super().__init__(name="luigiflow-heartbeat", daemon=True)
        self.run_ids, self.stopped = run_ids, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(runstate.heartbeat_interval()):
            for run_id in self.run_ids:  # a sweep's parent and children
                try:
                    record = runstate.read_runner_record(run_id)
                    if record is not None and record.owned_by_this_process():
                        record.heartbeat = time.time()
                        runstate.write_runner_record(run_id, record)
                except Exception:  # a missed beat is not a failed run
                    logging.warning("heartbeat of run %s failed", run_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()


def _param_text(value: object) -> str:
    """A config value as a param, cut to MLflow's limit (the feature columns of a wide table:
    the whole config is in `config/luigi.toml`)."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 1] + "…"


def prepare(
    client: MlflowClient,
    run_id: str,
    context: RunContext,
    output_names: Mapping[str, Mapping[str, str]],
    tracking_uri: str,
    ui: str,
) -> None:
    """Before the build: copies of reused outputs (--copy-reused), the input files as MLflow
    datasets, and an index a person can follow to reused files."""
    for family, entry in context.decided(COPIED).items():
        copy = TaskFolder(run_id, family)
        digest = copy_outputs(TaskFolder.from_source(str(entry.source)), copy)
        fingerprint = (copy.manifest() or {}).get("fingerprint", {}).get("digest", "")
        tag = fingerprint_tag_value(fingerprint, digest)
        client.set_tag(run_id, FINGERPRINT_TAG.format(family), tag)
    _log_input_files(client, run_id, context)
    reused = {**context.decided(REUSED), **context.decided(COPIED)}
    if reused:
        index = _reuse_index(client, reused, output_names, tracking_uri, ui)
        client.log_dict(run_id, index, "reused_outputs.json")


def differences_from(run_id: str, project_root: Path, task_classes: Mapping[str, type]) -> list:
    """What differs between this checkout and the one that made run `run_id`, in words: the
    git commit, and the tasks whose code differs (with the modules)."""
    notes = []
    commit = client().get_run(run_id).data.tags.get("mlflow.source.git.commit")
    git = git_state(project_root)
    if commit and git is not None and (git.commit != commit or git.dirty):
        changes = " with uncommitted changes" if git.dirty else ""
        notes.append(
            f"run {run_id} was made at commit {commit[:12]}; "
            f"this checkout is at {git.commit[:12]}{changes}"
        )
    try:
        differences = code_differences(load(run_id), task_classes)
    except NoContext:
        differences = ""
    if differences:
        notes.append(f"code differs from run {run_id}: {differences}; those tasks rerun")
    return notes


def _reuse_index(client, reused, output_names, tracking_uri: str, ui: str) -> dict:
    index = {}
    for family, entry in reused.items():
        folder = TaskFolder.from_source(str(entry.source))
        item = {"source": entry.source, "copied": entry.decision == COPIED, "cached": entry.cached}
        if folder.run_id:
            experiment_id = client.get_run(folder.run_id).info.experiment_id
            item["outputs"] = {
                name: run_url(
                    tracking_uri,
                    experiment_id,
                    folder.run_id,
                    ui,
                    f"/artifacts/{family}/{filename}",
                )
                for name, filename in output_names[family].items()
            }
        index[family] = item
    return index


def _log_input_files(client: MlflowClient, run_id: str, context: RunContext) -> None:
    """The input files the pipeline reads, as MLflow dataset inputs carrying their hashes."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    input_dir = context.input_dir()
    inputs = {}
    for family, entry in context.tasks.items():
        for filename, digest in entry.fingerprint.get("inputs", {}).items():
            if filename.startswith("models:/"):  # external state, not a file
                continue
            source = json.dumps({"uri": (input_dir / filename).as_uri(), "sha256": digest})
            dataset = Dataset(filename, digest[:32], "local", source)
            inputs[filename] = DatasetInput(dataset, [InputTag("mlflow.data.context", family)])
    for attempt in range(3):  # runners started together insert the same dataset at once
        try:
            if inputs:
                client.log_inputs(run_id, datasets=list(inputs.values()))
            return
        except MlflowException as error:
            duplicate = "UNIQUE" in str(error) or "already exists" in str(error)
            if not duplicate or attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))  # the other insert is done: ours links to it


def run_url(
    tracking_uri: str, experiment_id: str, run_id: str, ui_address: str, path: str = ""
) -> str:
    """The run's page in the MLflow UI (the embedded store is served by `make ui`), or one of
    its artifacts. The UI opens on its GenAI side unless told this is model training."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ui_address
    page = f"{redact_uri(base).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}{path}?workflowType=machine_learning"
