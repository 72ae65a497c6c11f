"""The shared stack of docker-compose.yml, started as plain processes for the tests.

There is no Docker engine where the tests run. So the compose file is resolved by
`docker-compose config` (Debian's package), and each service's own command and environment
are taken from it and run here: PostgreSQL from Debian's packages (through its own pg_ctl,
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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import (
    BIN,
    REPO,
    ServerDidNotAnswer,
    free_port,
    log_tail,
    runner_env,
    wait_for,
    wait_until_answers,
    warm_tracking_server,
)

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
[ "$(id -u)" = 0 ] || exec "$bindir/pg_ctl" "$@"
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


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1, started and stopped by Debian's pg_ctl.

    `start` returns once a login succeeds: the port is open well before that, while the server
    still answers "the database system is starting up" (longer after a crash, when it replays
    its log first)."""

    def __init__(self, base: Path) -> None:
        self.base = base  # not below pytest's 0700 folders: the postgres user must enter it
        self.data = base / "data"
        self.log = base / "postgresql.log"
        self.host, self.port = "127.0.0.1", free_port()
        self.superuser_password = secrets.token_hex(8)
        self.pg_ctl = base / "pg_ctl"
        self.pg_ctl.write_text(PG_CTL)
        self.pg_ctl.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")

    def run(self, *arguments: str) -> None:
        result = subprocess.run(
            [str(self.pg_ctl), *arguments], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise ServerDidNotAnswer(
                f"pg_ctl {arguments[0]}: {result.stdout}{result.stderr}\n{log_tail(self.log)}"
            )

    def initdb(self) -> None:
        password_file = self.base / "superuser-password"
        password_file.write_text(self.superuser_password)
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres")
        # A throwaway cluster: initdb need not fsync it (3 s saved).
        options = f"-U postgres --auth=scram-sha-256 --pwfile={password_file} --no-sync"
        self.run("initdb", "-D", str(self.data), "-o", options)
        password_file.unlink()

    def start(self, timeout: float = 120) -> None:
        options = f"-p {self.port} -c listen_addresses={self.host} -k {self.base}"
        # pg_ctl's wait fails at once on a server that cannot start; then a login must succeed.
        self.run(
            "start", "-w", "-t", str(int(timeout)), "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip
        wait_until_answers(
            lambda: self.connect().close(), f"PostgreSQL on port {self.port}", log=self.log,
            timeout=timeout,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: the next start replays the log first."""
        self.run("stop", "-D", str(self.data), "-m", mode)

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", password=self.superuser_password,
            dbname=dbname, autocommit=True, connect_timeout=10,
        )  # fmt: skip


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh cluster, answering logins; stopped and removed afterwards."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="luigiflow-pg-")))
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop("immediate")  # nothing in it is kept
        shutil.rmtree(server.base, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[Database]:
    """PostgreSQL from Debian's packages on 127.0.0.1, with the role the compose file names
    (`db` service: POSTGRES_USER / POSTGRES_PASSWORD). The benchmark starts it too."""
    db = resolved()["services"]["db"]["environment"]
    role, password = db["POSTGRES_USER"], db["POSTGRES_PASSWORD"]
    with postgres_server() as server:
        with server.connect() as connection:
            connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        yield Database(server.host, server.port, role, password, server.superuser_password)


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
        url = f"http://127.0.0.1:{self.ports[name]}{self.HEALTH[name]}"
        wait_for(url, process, timeout=240, log=self.folder / f"{name}.log")
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
