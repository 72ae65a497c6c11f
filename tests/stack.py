"""The shared stack of docker-compose.yml, started as plain processes for the tests.

There is no Docker engine where the tests run. So the compose file is resolved by
`docker-compose config` (Debian's package), and each service's own command and environment
are taken from it and run here: PostgreSQL from Debian's packages (through pytest-postgresql,
as the `postgres` user, since PostgreSQL refuses to run as root), then MLflow's tracking server
and luigid exactly as the compose file starts them, with container paths, host names and ports
swapped for local ones. Change the compose file and the tests run the change.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, free_port, runner_env, wait_for, warm_tracking_server

COMPOSE = REPO / "docker-compose.yml"
AUTH = REPO / "docker-compose.auth.yml"
# What `make stack-up` reads from the environment; random here, so a test can grep for them.
STACK_ENV = {
    "POSTGRES_PASSWORD": f"pg-{secrets.token_hex(8)}",
    "MLFLOW_AUTH_ADMIN_PASSWORD": f"admin-{secrets.token_hex(8)}",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
}

# pg_ctl refuses root: run it as Debian's `postgres` user when the tests run as root.
PG_CTL = r"""#!/bin/sh
set -e
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
# A throwaway cluster: initdb need not fsync it (3 s saved).
[ "$1" != initdb ] || set -- "$@" -o --no-sync
[ "$(id -u)" = 0 ] || exec "$bindir/pg_ctl" "$@"
# initdb's --pwfile is a root-only temporary file: the postgres user must read it.
case "$*" in *--pwfile=*)
    chown postgres "$(printf '%s\n' "$*" | sed 's/.*--pwfile=\([^ ]*\).*/\1/')";;
esac
cd /
exec runuser -u postgres -- "$bindir/pg_ctl" "$@"
"""


def compose_config(*files: Path, **env: str) -> subprocess.CompletedProcess:
    """`docker-compose config` on the project's compose files: the file resolved, or why not."""
    arguments = [arg for path in files or (COMPOSE,) for arg in ("-f", str(path))]
    return subprocess.run(
        ["docker-compose", *arguments, "config"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(*files: Path) -> dict:
    result = compose_config(*files, **STACK_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@dataclass
class Local:
    """How a service's command and environment translate from the stack to this machine:
    whole arguments swapped (`0.0.0.0`, a port), and parts of values (a host, a folder)."""

    arguments: dict[str, str]
    parts: dict[str, str]

    def argument(self, value: str) -> str:
        value = self.arguments.get(value, value)
        for old, new in self.parts.items():
            value = value.replace(old, new)
        return value

    def command(self, service: dict) -> list[str]:
        program, *rest = service["command"]
        return [str(BIN / program), *(self.argument(str(a)) for a in rest)]

    def environment(self, service: dict) -> dict[str, str]:
        return {k: self.argument(str(v)) for k, v in (service.get("environment") or {}).items()}


@dataclass
class Database:
    host: str
    port: int
    user: str
    password: str
    superuser_password: str

    def dump(self, dbname: str) -> str:
        """The whole database as SQL text (what a backup holds)."""
        return subprocess.run(
            ["pg_dump", "--host", self.host, "--port", str(self.port), "--username", "postgres",
             dbname],
            env={**os.environ, "PGPASSWORD": self.superuser_password},
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip


@contextmanager
def running_postgres() -> Iterator[Database]:
    """PostgreSQL from Debian's packages on 127.0.0.1, with the role the compose file names
    (`db` service: POSTGRES_USER / POSTGRES_PASSWORD). The benchmark starts it too."""
    import psycopg
    from pytest_postgresql.executors import PostgreSQLExecutor

    db = resolved()["services"]["db"]["environment"]
    base = Path(tempfile.mkdtemp(prefix="luigiflow-pg-"))  # not below pytest's 0700 folders
    wrapper = base / "pg_ctl"
    wrapper.write_text(PG_CTL)
    wrapper.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    superuser_password = secrets.token_hex(8)
    executor = PostgreSQLExecutor(
        executable=str(wrapper),
        host="127.0.0.1",
        port=free_port(),
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "postgresql.log"),
        startparams="-w",
        dbname="tests",
        user="postgres",
        password=superuser_password,
        postgres_options="-c listen_addresses=127.0.0.1",
    )
    try:
        try:
            executor.start()
        except Exception:
            log = base / "postgresql.log"
            print(log.read_text(errors="replace") if log.exists() else "", file=sys.stderr)
            raise
        with psycopg.connect(
            host=executor.host, port=executor.port, user="postgres",
            password=superuser_password, dbname="postgres", autocommit=True,
        ) as connection:  # fmt: skip
            role, password = db["POSTGRES_USER"], db["POSTGRES_PASSWORD"]
            connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        yield Database(executor.host, executor.port, role, password, superuser_password)
    finally:
        if executor.running():
            executor.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Database]:
    with running_postgres() as database:
        yield database


def create_database(database: Database, name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=database.host, port=database.port, user="postgres",
        password=database.superuser_password, dbname="postgres", autocommit=True,
    ) as connection:  # fmt: skip
        connection.execute(f"CREATE DATABASE {name} OWNER {database.user}")


@dataclass
class Stack:
    """The compose file's `mlflow` and `luigid` services as processes, on a database of the
    PostgreSQL server; `start(name)` starts one again after a test stopped it."""

    database: Database
    dbname: str
    folder: Path
    config: dict  # the compose file, resolved
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen]

    HEALTH = {"mlflow": "/health", "luigid": "/api/graph"}
    PORTS = {"mlflow": "5000", "luigid": "8082"}

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def scheduler_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['luigid']}"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def env(self, **extra: str) -> dict[str, str]:
        """A runner's environment on this stack (what `.env.shared` says, for these ports)."""
        stack = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "LUIGIFLOW_SCHEDULER_URL": self.scheduler_url,
        }
        return runner_env(**{**stack, **extra})

    def local(self) -> Local:
        return Local(
            arguments={
                "0.0.0.0": "127.0.0.1",
                **{self.PORTS[name]: str(port) for name, port in self.ports.items()},
            },
            parts={
                "@db:5432/mlflow": f"@{self.database.host}:{self.database.port}/{self.dbname}",
                "/artifacts": str(self.folder / "artifacts"),
                "/state": str(self.folder / "state"),
                "/etc/luigiflow/": str(REPO / "docker") + "/",
            },
        )

    def start(self, name: str) -> None:
        service, local = self.config["services"][name], self.local()
        workdir = self.folder / name
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{name}.log", "a") as log:
            process = subprocess.Popen(
                local.command(service),
                cwd=workdir,
                env=runner_env(**local.environment(service)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        wait_for(f"http://127.0.0.1:{self.ports[name]}{self.HEALTH[name]}", process, timeout=240)
        if name == "mlflow":
            warm_tracking_server(self.tracking_uri, self.admin_headers())

    def admin_headers(self) -> dict[str, str]:
        """Basic auth as the admin when the stack runs with auth (every request needs a user)."""
        password = (
            self.config["services"]["mlflow"]
            .get("environment", {})
            .get("MLFLOW_AUTH_ADMIN_PASSWORD")
        )
        if not password:
            return {}
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def stop(self) -> None:
        for process in self.processes.values():
            stop_group(process)


def start_stack(database: Database, folder: Path, dbname: str, *files: Path) -> Iterator[Stack]:
    """The stack of the compose files (`docker-compose.yml` unless named) on `database`."""
    config = resolved(*files) if files else resolved()
    create_database(database, dbname)
    for name in ("artifacts", "state"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    ports = {"mlflow": free_port(), "luigid": free_port()}
    stack = Stack(database, dbname, folder, config, ports, {})
    try:
        for name in ("mlflow", "luigid"):
            stack.start(name)
        yield stack
    finally:
        stack.stop()


def stop_group(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def stack(postgres, tmp_path_factory) -> Iterator[Stack]:
    """The whole stack, shared by the tests of one test process."""
    yield from start_stack(postgres, tmp_path_factory.mktemp("stack"), "mlflow")


@pytest.fixture(scope="session")
def auth_stack(postgres, tmp_path_factory) -> Iterator[Stack]:
    """The stack with basic auth on (docker-compose.auth.yml), on a database of its own."""
    yield from start_stack(
        postgres, tmp_path_factory.mktemp("auth-stack"), "mlflow_auth", COMPOSE, AUTH
    )
