"""The tracking store: one client per tracking URI, small files read and written in a run's
artifacts, one runner at a time setting the store up, experiments where the project says, a
moved project folder repaired, and calls that end a run bounded by one deadline (`Ending`): a
store that hangs cannot hold the runner for a request timeout and its retries per call.

mlflow is imported only when the store is first used, so that importing the machinery (a task
module, say) neither costs mlflow's import nor reads the environment before `.env` is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from luigiflow.names import EXPERIMENT_KIND_TAG
from luigiflow.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment

REPAIR_COMMAND = "python src/runner.py --repair-store"


def client():
    """One MlflowClient per tracking URI, the one the environment names (the runner put it
    there), made once per process."""
    return _client(os.environ.get("MLFLOW_TRACKING_URI", ""))


@cache
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri or None)


@cache
def run_artifact_uri(run_id: str) -> str:
    return client().get_run(run_id).info.artifact_uri


@cache
def repository(run_id: str):
    """The run's artifact repository, addressed by its URI.

    MlflowClient's artifact calls take a run id and look the run up again on every call (on a
    tracking server: two requests and a logged-model search per file); this does it once.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(run_artifact_uri(run_id))


def local_path(uri: str) -> Path | None:
    """The folder an artifact URI names on this machine, or None for a remote store."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def write_run_text(run_id: str, path: str, text: str) -> None:
    """Write a small file at `path` in a run's artifacts, whole or not at all."""
    root = local_path(run_artifact_uri(run_id))
    if root is not None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(root / path, text)
        return
    folder = Path(tempfile.mkdtemp(dir=staging_root(), prefix="upload-"))
    try:
        (folder / Path(path).name).write_text(text)
        repository(run_id).log_artifact(str(folder / Path(path).name), str(Path(path).parent))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_run_text(run_id: str, path: str) -> str | None:
    """A small file of a run's artifacts, read fresh (it may have changed), or None if absent."""
    from mlflow.exceptions import MlflowException

    root = local_path(run_artifact_uri(run_id))
    if root is not None:
        return (root / path).read_text() if (root / path).is_file() else None
    folder = Path(tempfile.mkdtemp(dir=staging_root(), prefix="download-"))
    try:
        return Path(repository(run_id).download_artifacts(path, str(folder))).read_text()
    except (OSError, MlflowException):
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def list_run_files(run_id: str, folder: str) -> list[str]:
    """The names of the files in a folder of a run's artifacts (none when it has no such
    folder). Unlike `read_run_text`, a store that fails raises: an empty folder and a store
    that cannot say are not the same."""
    root = local_path(run_artifact_uri(run_id))
    if root is not None:
        return sorted(p.name for p in (root / folder).glob("*") if p.is_file())
    return sorted(Path(f.path).name for f in repository(run_id).list_artifacts(folder))


def staging_root() -> Path:
    """Local scratch space for outputs on their way to (or from) a remote artifact store."""
    root = Path(os.environ.get("PROJECT_ROOT", ".")) / ".luigiflow"
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_atomic(path: Path, text: str) -> None:
    """Write a small file whole or not at all (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class StoreMoved(Exception):
    """The embedded store records artifact folders at a path that no longer exists."""


class StoreUnavailable(Exception):
    """The tracking store cannot be used at all: down, or refusing these credentials."""


def open_store(settings: Settings) -> MlflowClient:
    """A client on the store, checked with one request (which creates or migrates an embedded
    store: one runner at a time). StoreUnavailable says in one line why it cannot be used."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

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
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if settings.embedded_store:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:100] or "experiment"
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


class Ending:
    """The steps that end a run (or a sweep's runs), each in a thread joined with the time
    left, so that requests that each wait their timeout cannot add up. The clock starts at the
    first step. After a step timed out, only the steps that must be tried (the run's status)
    are, with one request timeout more between them all: at most `seconds` plus that."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = ending_seconds() if seconds is None else seconds
        self.grace = request_timeout()
        self.deadline: float | None = None
        self.problems: list[str] = []
        self.timed_out = False

    def step(self, what: str, call: Callable[[], object], always: bool = False) -> object:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        if self.timed_out and not always:
            return None
        end = self.deadline + (self.grace if always else 0.0)
        result: list[object] = []
        failure: list[BaseException] = []

        def work() -> None:
            try:
                result.append(call())
            except BaseException as error:
                failure.append(error)

        thread = threading.Thread(target=work, name=f"ending: {what}", daemon=True)
        thread.start()
        thread.join(max(end - time.monotonic(), 0.0))
        if thread.is_alive():
            self.timed_out = True
            self.problems.append(f"could not {what} within the deadline")
            logging.error("could not %s within the deadline", what)
        elif failure:
            self.problems.append(f"could not {what} ({_briefly(failure[0])})")
            logging.error("could not %s", what, exc_info=failure[0])
        return result[0] if result else None


def ending_seconds() -> float:
    """How long a run's (or a sweep's) ending may take: LUIGIFLOW_ENDING_TIMEOUT_S, or 60 s."""
    return float(os.environ.get("LUIGIFLOW_ENDING_TIMEOUT_S", "60"))


def request_timeout() -> float:
    """One request to a tracking server: MLFLOW_HTTP_REQUEST_TIMEOUT (`.env` sets it)."""
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or "30")


def _briefly(error: BaseException) -> str:
    """An error's type and the first line of its message, short enough for one paragraph."""
    first = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first[:100]}" if first else type(error).__name__
