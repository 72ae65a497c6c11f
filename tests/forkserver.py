"""A Python that has imported the runner's heavy libraries once, and forks a process per run.

`python src/runner.py` spends 3 to 7 s importing numpy, pandas, scipy, scikit-learn, skops,
pyarrow, SQLAlchemy and the like before it does anything; the slow tests start it about 150
times. This server (one per test process) imports those libraries once and forks a child for
each run. The child is a process of its own, with its own pid, working directory,
environment, arguments, stdin, stdout and stderr; it runs `src/runner.py` of its project as
`__main__`, and its exit status is the script's (`exit_now`, `sys.exit`, an uncaught exception,
a signal), so nothing of a run leaks into the tests or into the next run. What a real start
would import later is imported here only where it cannot depend on the environment the run
gets: never `mlflow`, `luigi` or the project's own modules (`luigiflow`, `tasks`), which read
their settings (.env, LUIGI_CONFIG_PATH, MLFLOW_*) when imported; `start` checks that none of
them is loaded before the first fork.

Tests about the process itself (signals, kill -9, a terminal's process group, the worker
processes it forks, the interpreter it is started with) start the runner with
`subprocess` as before: see `start_runner` in conftest.py. Run with `python tests/forkserver.py
SOCKET`; the server ends when its stdin (a pipe from the tests) closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Imported before the first fork. Each is imported by a run of the example pipeline, none reads
# MLFLOW_*, LUIGI* or the project's settings when imported. matplotlib reads MPLBACKEND when
# imported: the runner sets it to Agg before any plot (settings.py), so the server does too.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "pyarrow.parquet", "pyarrow.dataset", "scipy.sparse",
    "scipy.stats", "sklearn.base", "sklearn.compose", "sklearn.ensemble", "sklearn.impute",
    "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection", "sklearn.pipeline",
    "sklearn.preprocessing", "skops.io", "matplotlib", "matplotlib.pyplot", "sqlalchemy",
    "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql", "sqlalchemy.dialects.mssql", "alembic.migration",
    "alembic.command", "fastapi", "pydantic", "requests", "urllib3", "yaml", "cloudpickle",
    "google.protobuf.json_format", "packaging.requirements", "psutil", "pygments",
)  # fmt: skip
# Imported with their settings read from the run's environment: never before the fork.
LATE = ("mlflow", "luigi", "luigiflow", "tasks")
# What the interpreter reads when it starts (PYTHON* variables): a run whose environment
# differs from the server's in one of them is started the ordinary way (see `can_run`).
STARTUP_PREFIX = "PYTHON"


# --- the server ----------------------------------------------------------------------------------


def preload() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            continue
    early = [name for name in sys.modules if name.split(".")[0] in LATE]
    assert not early, f"imported before the run's environment exists: {early}"


def serve(path: str) -> None:
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select(timeout=0.05):
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 1024):  # the tests are gone
                    for pid in children:
                        _kill(pid)
                    return
                continue
            connection, _ = listener.accept()
            pid = start_child(connection, [listener, selector], children)
            if pid is not None:
                children[pid] = connection
        reap(children)


def start_child(connection, own: list, children: dict) -> int | None:
    """Fork a child for the request on `connection`; `own` are the server's sockets and
    selector, which the child closes."""
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        connection.close()
        return None
    request = json.loads(message)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for handle in [*own, *children.values(), connection]:
            handle.close()
        run_child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    connection.send(json.dumps({"pid": pid}).encode())
    return pid


def reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            status = json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode()
            with contextlib.suppress(OSError):  # the test gave up on it (a timeout)
                connection.send(status)
            connection.close()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python SCRIPT ARGS` in the run's folder and environment."""
    import atexit
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if request["ignore_sigint"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("PYTHONFAULTHANDLER"):
        import faulthandler

        faulthandler.enable()
    script, *args = request["argv"][1:]
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)  # as for `python SCRIPT`
    _reseed()
    code = 0
    try:
        runpy.run_path(os.path.abspath(script), run_name="__main__")
    except SystemExit as exit:
        code = _exit_code(exit)
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # what Python does on an uncaught Ctrl-C
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _finish()
    os._exit(code)


def _reseed() -> None:
    """A new interpreter seeds numpy's global generator from the OS: so does each child."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _exit_code(exit: SystemExit) -> int:
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return 1


def _finish() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


# --- the client ----------------------------------------------------------------------------------


class ForkServer:
    """The server of this test process, started on first use and ended with it."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.path = str(folder / "forkserver.sock")
        self.env = env
        self.log = folder / "forkserver.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, self.path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=folder,
                env=env,
            )
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the fork server did not start:\n{self.log.read_text()}")

    def can_run(self, env: dict[str, str]) -> bool:
        """Only an environment the interpreter would have started alike with."""
        if self.process.poll() is not None:
            return False
        keys = {k for k in (*env, *self.env) if k.startswith(STARTUP_PREFIX)}
        return all(env.get(k) == self.env.get(k) for k in keys)

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """Like `subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout)` for `python SCRIPT ARGS`, in a child forked from the server."""
        deadline = time.monotonic() + timeout
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        request = {"argv": argv, "cwd": str(cwd), "env": env, "ignore_sigint": False}
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
            connection.connect(self.path)
            socket.send_fds(connection, [json.dumps(request).encode()], [stdin, out_w, err_w])
            for fd in (stdin, out_w, err_w):
                os.close(fd)
            pid = json.loads(connection.recv(1024))["pid"]
            outputs = _read_until_closed({out_r: b"", err_r: b""}, deadline)
            status = None
            if outputs is not None:
                connection.settimeout(max(deadline - time.monotonic(), 0.01))
                with contextlib.suppress(TimeoutError):
                    status = json.loads(connection.recv(1024))["status"]
            if status is None:
                _kill(pid)
                raise subprocess.TimeoutExpired(argv, timeout)
        stdout, stderr = (_text(outputs[fd]) for fd in (out_r, err_r))
        return subprocess.CompletedProcess(argv, status, stdout, stderr)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _read_until_closed(buffers: dict[int, bytes], deadline: float) -> dict[int, bytes] | None:
    """Everything written to the pipes until every writer has closed them (None: timed out)."""
    result = dict(buffers)
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for fd in list(selector.get_map()):
                    selector.unregister(fd)
                    os.close(fd)
                return None
            for key, _ in selector.select(timeout=remaining):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    result[key.fd] += chunk
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
    return result


def _text(data: bytes) -> str:
    """As `subprocess.run(..., text=True)` decodes: the locale's encoding, universal newlines."""
    import locale

    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


if __name__ == "__main__":
    serve(sys.argv[1])
