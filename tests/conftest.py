"""Shared fixtures: a throwaway copy of the project, and a runner to start in it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KAGGLE = REPO.parent / "shared" / "data" / "titanic"
BIN = Path(sys.executable).parent
pytest_plugins = ["stack"]  # the shared stack's fixtures (tests/stack.py)
sys.path.insert(0, str(REPO / "src"))


def copy_project(destination: Path) -> Path:
    """The files a user clones (no store, no venv), in a folder of its own."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("src", "input"):
        shutil.copytree(
            REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in (".env", ".env.shared", "luigi.toml", "MLproject"):
        shutil.copy(REPO / name, destination / name)
    # The examples' configs; their data is made by scripts/make_example_data.py, not cloned.
    shutil.copytree(
        REPO / "examples", destination / "examples", ignore=shutil.ignore_patterns("input")
    )
    return destination


@pytest.fixture
def project(tmp_path: Path, migrated_store_file: Path) -> Path:
    """A clone whose embedded store exists, as after its first runner made it. Creating a
    store runs every MLflow migration, seconds per test; the tests of a first run on a fresh
    clone take `copy_project` alone."""
    return clone_with_store(tmp_path / "project", migrated_store_file)


def clone_with_store(folder: Path, migrated_store_file: Path) -> Path:
    project = copy_project(folder)
    shutil.copy(migrated_store_file, project / "mlflow.db")
    with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as db, db:
        db.execute(  # the Default experiment's folder, where a runner here would put it
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(project / "mlruns" / "0"),),
        )
    return project


@dataclass
class ColdRun:
    """A clone after one `python src/runner.py` of the example pipeline, and what it printed."""

    folder: Path
    stdout: str

    def into(self, project: Path) -> None:
        """Give `project`, a clone of the same files, this run's store, as if its own first
        runner had made it there: the store, its artifacts and the runner's logs copied, and
        every path in the store that named this clone naming `project` instead."""
        for name in ("mlartifacts", ".luigiflow"):
            shutil.rmtree(project / name, ignore_errors=True)
            shutil.copytree(self.folder / name, project / name, symlinks=True)
        for name in ("mlflow.db", "mlflow.db.lock"):
            if (self.folder / name).exists():
                shutil.copy2(self.folder / name, project / name)
        old, new = str(self.folder), str(project)
        with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as db, db:
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for (table,) in tables:
                for column in [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]:
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old, new, old),
                    )


@pytest.fixture(scope="session")
def cold_run(tmp_path_factory, migrated_store_file) -> ColdRun:
    """One cold run of the example pipeline on a clone of its own, made once per test process
    for the tests that start from one (see `first_run`)."""
    folder = clone_with_store(tmp_path_factory.mktemp("cold-run") / "project", migrated_store_file)
    result = run_runner(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return ColdRun(folder, result.stdout)


@pytest.fixture
def first_run(project: Path, cold_run: ColdRun):
    """`project` after one cold run of the example pipeline, `python src/runner.py` and
    nothing else: the session's `cold_run`, copied in. Returns that run."""
    cold_run.into(project)
    [run] = runs(project)
    return run


def runner_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "LUIGI", "PROJECT_ROOT"))
    }
    env.update(extra)
    return env


def run_runner(
    project: Path, *args: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python src/runner.py ARGS` in `project`, as a user starts it, until it exits: a process
    of its own, forked from a Python that has its heavy libraries imported already (see
    tests/forkserver.py; LUIGIFLOW_TESTS_FORK_SERVER=0 starts every one from scratch)."""
    command, env = [sys.executable, "src/runner.py", *args], env or runner_env()
    server = fork_server()
    if server is not None and server.can_run(env):
        return server.run(command, project, env, timeout)
    return subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=timeout, env=env
    )


_fork_server: list = []  # this test process's, once started


def fork_server():
    """The fork server of this test process, started on first use (None when turned off)."""
    if os.environ.get("LUIGIFLOW_TESTS_FORK_SERVER") == "0":
        return None
    if not _fork_server:
        from forkserver import ForkServer

        folder = Path(tempfile.mkdtemp(prefix="luigiflow-forkserver-"))
        server = ForkServer(folder, runner_env())
        _fork_server.append(server)

        def close() -> None:
            server.close()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(close)
    return _fork_server[0]


def start_runner(
    project: Path, *args: str, env: dict | None = None, ignore_sigint: bool = False
) -> subprocess.Popen:
    """A runner in the background. `ignore_sigint`: start it the way a script's background job
    (or a CI step) starts it, with SIGINT ignored."""
    disposition = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    return subprocess.Popen(
        [sys.executable, "src/runner.py", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or runner_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )


def store(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def runs(project: Path) -> list:
    """Every run in the project's store, newest first (none when no store was created)."""
    if not (project / "mlflow.db").exists():
        return []
    client = store(project)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return (
        client.search_runs(experiments, order_by=["attributes.start_time DESC"])
        if experiments
        else []
    )


def run_file(run, path: str, client=None) -> dict | None:
    """A JSON file of a run's artifacts, or None if it has none: read in place from the
    embedded store, or downloaded through `client` from a server."""
    if client is None:
        file = Path(run.info.artifact_uri) / path
        return json.loads(file.read_text()) if file.is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        try:
            downloaded = client.download_artifacts(run.info.run_id, path, folder)
        except Exception:
            return None
        return json.loads(Path(downloaded).read_text())


def task_records(run, client=None) -> dict[str, dict]:
    """Each task's record in the run (`luigiflow/tasks/<Task>.json`), by task."""
    if client is None:
        folder = Path(run.info.artifact_uri) / "luigiflow" / "tasks"
        paths = [f"luigiflow/tasks/{p.name}" for p in folder.glob("*.json")]
    else:
        paths = [f.path for f in client.list_artifacts(run.info.run_id, "luigiflow/tasks")]
    found = {Path(path).stem: run_file(run, path, client) for path in paths}
    return {family: record for family, record in found.items() if record}


def task_statuses(run, client=None) -> dict[str, str]:
    return {family: record["status"] for family, record in task_records(run, client).items()}


def planned(run, client=None) -> dict[str, dict]:
    """What the run context decided for each task (decision, source, reason, mismatch)."""
    context = run_file(run, "luigiflow/context.json", client) or {"tasks": []}
    return {entry["family"]: entry for entry in context["tasks"]}


def reused_from(run, client=None) -> dict[str, str]:
    """Where the outputs of each reused or copied task of the run came from."""
    return {
        family: entry["source"]
        for family, entry in planned(run, client).items()
        if entry["decision"] in ("reused", "copied", "shared")
    }


def artifacts(project: Path, run) -> Path:
    """The local folder of a run's artifacts (the embedded store writes them in place)."""
    return Path(run.info.artifact_uri)


def edit_task(project: Path, module: str, anchor: str, code: str, replace: bool = False) -> None:
    """Change a task in the copy: put `code` before the line `anchor`, or in its place."""
    path = project / "src" / "tasks" / f"{module}.py"
    text = path.read_text()
    assert anchor in text, anchor
    path.write_text(text.replace(anchor, code if replace else f"{code}\n{anchor}"))


def start_stuck_in_trainer(project: Path, ignore_sigint: bool = False, **env: str):
    """Start a runner whose Trainer sleeps, and return once it is asleep (it touches a file
    at the top of `run()`), so that signals reach it in a known place."""
    asleep = project / "trainer-asleep"
    edit_task(
        project,
        "trainer",
        TRAINER_TOP,
        f"        import pathlib, time; pathlib.Path({str(asleep)!r}).touch(); time.sleep(60)",
    )
    process = start_runner(project, env=runner_env(**env), ignore_sigint=ignore_sigint)
    seen = wait_for_line(process, " started: ")  # the run's first line
    deadline = time.monotonic() + 60
    while not asleep.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asleep.exists(), "the Trainer never went to sleep"
    return process, seen


def wait_for_line(process, text: str, timeout: float = 120) -> str:
    """Read the runner's stdout until a line contains `text`; return what was read."""
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen += line
        if text in line or (not line and process.poll() is not None):
            break
    if text not in seen and process.poll() is not None:
        seen += f"\n[exited with {process.returncode}]\n" + process.stderr.read()
    assert text in seen, seen
    return seen


def warm_tracking_server(url: str, headers: dict[str, str] | None = None) -> None:
    """Send a tracking server's workers their first real request, as a server in use has had:
    each worker opens its store on its first request (1-2 s idle, several times that on a busy
    CI machine), which a test's short request timeout must not pay."""
    from concurrent.futures import ThreadPoolExecutor

    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default",
        headers=headers or {},
    )
    with ThreadPoolExecutor(8) as pool:  # concurrent, so that every worker gets one
        for _ in range(2):
            list(pool.map(lambda _: urllib.request.urlopen(request, timeout=120).read(), range(8)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerDidNotAnswer(RuntimeError):
    """A server the tests started never answered: its log says why."""


def log_tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_until_answers(
    answer: Callable[[], object],
    what: str,
    *,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
    timeout: float = 120,
) -> None:
    """Return once `answer()` succeeds: a real connection or request, never a bound port or a
    live process (PostgreSQL accepts TCP while it still refuses logins, "the database system is
    starting up"). A server that exits, or is silent past `timeout`, fails with its log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer()
            return
        except Exception as error:  # each refusal means "not yet"; the last one is reported
            refusal = f"{type(error).__name__}: {error}".strip()
        if alive is not None and not alive():
            raise ServerDidNotAnswer(f"{what} exited ({refusal})\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise ServerDidNotAnswer(
                f"{what} did not answer in {timeout:.0f} s ({refusal})\n{log_tail(log)}"
            )
        time.sleep(0.2)


def wait_for(
    url: str, process: subprocess.Popen, timeout: float = 120, log: Path | None = None
) -> None:
    """Until an HTTP server answers `url` with a success (an error status is not yet up)."""

    def answer() -> None:
        urllib.request.urlopen(url, timeout=5).close()

    wait_until_answers(answer, url, alive=lambda: process.poll() is None, log=log, timeout=timeout)


@contextmanager
def service(command: list[str], health_path: str, folder: Path, **env: str) -> Iterator[str]:
    """Start a server on a free loopback port, wait until it answers, stop it afterwards."""
    port = free_port()
    handle, name = tempfile.mkstemp(prefix=f"{Path(command[0]).name}-{port}-", suffix=".log")
    os.close(handle)
    log = Path(name)
    with open(log, "w") as output:
        process = subprocess.Popen(
            [str(BIN / command[0]), *command[1:], "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=runner_env(MLFLOW_DISABLE_TELEMETRY="true", **env),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + health_path, process, log=log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.unlink(missing_ok=True)


def served_predictions(project: Path, rows, *serve_args: str) -> list:
    """What `python src/serve.py` answers for raw `rows` (a DataFrame) over REST."""
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    with service(["python", "src/serve.py", *serve_args], "/ping", project) as url:
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]


@pytest.fixture
def luigid(tmp_path):
    """Luigi's central scheduler."""
    command = [
        "luigid",
        "--address",
        "127.0.0.1",
        "--state-path",
        str(tmp_path / "state"),
        "--logdir",
        str(tmp_path),
    ]
    with service(command, "/api/graph", tmp_path) as url:
        yield url


# The tests' own tracking servers run without MLflow's job execution (a job runner and two
# task queues, eight more processes importing MLflow: 20 s of CPU per server on two cores);
# no test runs a job. The stack of docker-compose.yml (tests/stack.py) runs as that file says.
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A tracking server with proxied artifacts (`mlflow-artifacts:/`), as a team would run it."""
    folder = tmp_path_factory.mktemp("server")
    command = [
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
    ]
    with service(command, "/health", folder, **NO_JOBS) as url:
        yield url


@pytest.fixture
def settings(tmp_path, monkeypatch, migrated_store_file):
    """A project's settings on a throwaway embedded store, ready to use (copied from an empty
    migrated one); the environment names it, as the runner leaves it."""
    from luigiflow.settings import Settings

    shutil.copy(migrated_store_file, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    return Settings(tmp_path, tmp_path / "luigi.toml", uri, tmp_path / "mlartifacts")


@pytest.fixture
def client(settings):
    from mlflow import MlflowClient

    return MlflowClient(settings.tracking_uri)


@pytest.fixture(scope="session")
def migrated_store_file(tmp_path_factory) -> Path:
    """An empty embedded store whose schema is made once per session: creating one runs
    every MLflow migration, seconds of fsync. Made without syncing (a copy of a finished file
    is all the tests need), which is several times faster."""
    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def unsynced(connection, _record) -> None:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA journal_mode = MEMORY")

    path = tmp_path_factory.mktemp("migrated-store") / "mlflow.db"
    event.listen(Engine, "connect", unsynced)
    try:
        MlflowClient(f"sqlite:///{path}").search_experiments()
    finally:
        event.remove(Engine, "connect", unsynced)
    return path


def complete_outputs(client, run_id: str | None, folder: Path, manifest: dict) -> None:
    """Finish a task folder made by hand as a task finishes its own: the manifest last, with
    every file's digest, and the manifest's digest recorded on its run (if it has one) in the
    fingerprint tag (after the fingerprint the test tagged, else the manifest's)."""
    from luigiflow.names import FINGERPRINT_TAG, fingerprint_tag_value
    from luigiflow.targets import TaskFolder, TaskWriter

    digest = TaskWriter(TaskFolder(run_id, folder.name, folder)).commit(manifest)
    if run_id is not None:
        tagged = client.get_run(run_id).data.tags.get(FINGERPRINT_TAG.format(folder.name), "")
        fingerprint = tagged.partition(":")[0] or manifest.get("fingerprint", {}).get("digest", "")
        tag = fingerprint_tag_value(fingerprint, digest)
        client.set_tag(run_id, FINGERPRINT_TAG.format(folder.name), tag)


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A tracking server of its own (proxied artifacts under `folder`), for a test that stops,
    freezes or tampers with it; returns the process and its URL. It serves from child
    processes: signal it with `signal_server`."""
    port = free_port()
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 's.db'}",
        "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = folder / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            command,
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=runner_env(MLFLOW_DISABLE_TELEMETRY="true", **NO_JOBS),
            start_new_session=True,  # it serves from child processes: signal the whole group
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", server, log=log)
    warm_tracking_server(url)
    return server, url


def signal_server(server: subprocess.Popen, signum: int) -> None:
    """Send `signum` to a server from `start_server` and every process it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signum)


TRAINER_TOP = "        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score"


def stall_trainer_when_asked(project: Path) -> None:
    """The Trainer sleeps when STALL_TRAINER is set (touching `asleep` first): the same code
    in every process, stalled only in the runner a test wants stalled."""
    edit_task(
        project,
        "trainer",
        TRAINER_TOP,
        "        import os, pathlib, time\n"
        "        if os.environ.get('STALL_TRAINER'):\n"
        f"            pathlib.Path({str(project / 'asleep')!r}).touch()\n"
        "            time.sleep(120)",
    )


def gate_trainer(project: Path, gate: Path) -> Path:
    """The Trainer waits for the file `gate` (touching `asleep` in its project first): a test
    acts while it runs, then lets it go (the same code in every clone that gets the same
    gate)."""
    edit_task(
        project,
        "trainer",
        TRAINER_TOP,
        "        import os, pathlib, time\n"
        "        pathlib.Path(os.environ['PROJECT_ROOT'], 'asleep').touch()\n"
        f"        while not pathlib.Path({str(gate)!r}).exists():\n"
        "            time.sleep(0.05)",
    )
    return project


def wait_until_asleep(project: Path, runner: subprocess.Popen) -> str:
    """Wait until the runner's Trainer sleeps at its gate; return what the runner printed."""
    seen = wait_for_line(runner, " started: ")  # the run's first line
    wait_for_file(project / "asleep")
    return seen


def wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def add_secret_parameter(project: Path, variable: str = "", literal: str = "") -> None:
    """Preprocessor gets an `api_token` parameter, set in luigi.toml as `${variable}`, or as
    the `literal` value itself."""
    edit_task(project, "preprocessor", "import pandas as pd", "import luigi")
    edit_task(
        project,
        "preprocessor",
        '    outputs = {"train": "train.parquet"}',
        '    api_token = luigi.Parameter(default="")\n',
    )
    config = project / "luigi.toml"
    value = literal or "${" + variable + "}"
    config.write_text(config.read_text() + f'\n[Preprocessor]\napi_token = "{value}"\n')
