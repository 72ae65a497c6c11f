"""The tracking store: one runner at a time sets it up, experiments live where the project
says, and a moved project folder is repaired.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from luigiflow.names import EXPERIMENT_KIND_TAG
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
