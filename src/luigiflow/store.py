"""The tracking store: one runner at a time sets it up, experiments live where the project
says, runs abandoned by a dead runner are marked, and a moved project folder is repaired.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException

from luigiflow.names import (
    EXPERIMENT_KIND_TAG,
    HEARTBEAT_INTERVAL_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_TAG,
    PROCESS_START_TAG,
)
from luigiflow.settings import Settings
from luigiflow.targets import local_path

REPAIR_COMMAND = "python src/runner.py --repair-store"


class StoreMoved(Exception):
    """The embedded store records artifact folders at a path that no longer exists."""


class StoreUnavailable(Exception):
    """The tracking store cannot be used at all: down, or refusing these credentials."""


def open_store(settings: Settings) -> MlflowClient:
    """A client on the store, checked with one request (which creates or migrates an embedded
    store: one runner at a time). StoreUnavailable says in one line why it cannot be used."""
    try:
        with store_lock(settings):
            client = MlflowClient()
            client.search_experiments(max_results=1)
    except MlflowException as error:
        raise StoreUnavailable(_why_unavailable(settings.tracking_uri, str(error))) from None
    return client


def _why_unavailable(uri: str, message: str) -> str:
    if "Invalid Host header" in message:
        return (
            f"the tracking server at {uri} refuses this host name: add it to the server's "
            "--allowed-hosts (LUIGIFLOW_ALLOWED_HOSTS on the stack)"
        )
    if "error code 401" in message or "not authenticated" in message.lower():
        return (
            f"the tracking server at {uri} refused the credentials: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (.env.local or the environment)"
        )
    if "error code 403" in message:
        return f"the tracking server at {uri} does not allow this user to read experiments"
    if "Max retries exceeded" in message or "Connection" in message:
        return f"the tracking server at {uri} does not answer (is it running? is the URI right?)"
    return f"the tracking store {uri} failed: {message.strip().splitlines()[0][:300]}"


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


def process_start(pid: int) -> str:
    """When a process started (from /proc), so a recycled pid is not taken for the runner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def heartbeat_interval() -> float:
    """Seconds between a running run's heartbeats (LUIGIFLOW_HEARTBEAT_S, 60 by default)."""
    return float(os.environ.get("LUIGIFLOW_HEARTBEAT_S", "60"))


def runner_gone(run: Run, now: float | None = None) -> bool:
    """Whether the runner of a RUNNING run is gone: on this host, its process is; on another,
    it missed three heartbeats (at the interval the run itself recorded)."""
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname():
        pid = int(tags.get(PID_TAG, "0") or 0)
        return not (
            pid and process_start(pid) and process_start(pid) == tags.get(PROCESS_START_TAG)
        )
    last = float(tags.get(HEARTBEAT_TAG) or run.info.start_time / 1000)
    interval = float(tags.get(HEARTBEAT_INTERVAL_TAG) or 60)
    return (now or time.time()) - last > 3 * interval


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
        if HOST_TAG not in run.data.tags or not runner_gone(run):
            continue  # not a runner's run, or its runner is alive
        try:
            client.set_terminated(run.info.run_id, "KILLED")
        except MlflowException:
            logging.warning("could not mark run %s KILLED", run.info.run_id, exc_info=True)
            continue
        killed.append(run.info.run_id)
    return killed


class Heartbeat(threading.Thread):
    """Tags the run `luigiflow.heartbeat` with the time, every interval, while it runs: how
    runners on other hosts tell a live run from one whose runner died."""

    def __init__(self, client: MlflowClient, *run_ids: str) -> None:
        super().__init__(name="luigiflow-heartbeat", daemon=True)
        self.client, self.run_ids, self.stopped = client, run_ids, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(heartbeat_interval()):
            for run_id in self.run_ids:  # a sweep's parent and children
                try:
                    self.client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
                except Exception:  # a missed beat is not a failed run
                    logging.warning("heartbeat of run %s failed", run_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
