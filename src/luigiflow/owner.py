"""Which process owns a run, and whether it is still alive.

A runner writes who it is (host, pid, when the process started, the command line, library
versions) into the run's artifacts (`luigiflow/runner.json`) and refreshes a heartbeat there
while it works. Another runner that finds the run RUNNING reads that record to tell a live run
from one whose runner died: on the same host by the process itself, elsewhere by three missed
heartbeats. Kept out of the run's tags, which are for what people search on; a record is read
only for the few runs that are RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, fields

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from luigiflow import records
from luigiflow.names import RUNNER_ARTIFACT
from luigiflow.targets import read_run_text, write_run_text


@dataclass
class RunnerRecord:
    host: str
    pid: int
    process_start: str  # from /proc: a recycled pid is not taken for the runner
    heartbeat: float  # seconds since the epoch, refreshed while the runner works
    heartbeat_interval_s: float
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    resumes: list[dict] = field(default_factory=list)  # each: at, command, previous_status

    @classmethod
    def of_this_process(cls, command: str, versions: dict[str, str]) -> RunnerRecord:
        pid = os.getpid()
        return cls(
            socket.gethostname(), pid, process_start(pid), time.time(), heartbeat_interval(),
            command, versions,
        )  # fmt: skip

    def owned_by_this_process(self) -> bool:
        return (self.host, self.pid) == (socket.gethostname(), os.getpid())

    def taken_over(self, command: str, previous_status: str) -> RunnerRecord:
        """The record once this process resumes the run: its owner now, the earlier
        commands kept."""
        mine = RunnerRecord.of_this_process(self.command, self.versions)
        entry = {"at": time.time(), "command": command, "previous_status": previous_status}
        mine.resumes = [*self.resumes, entry]
        return mine


def write(run_id: str, record: RunnerRecord) -> None:
    write_run_text(run_id, RUNNER_ARTIFACT, json.dumps(asdict(record), indent=2))


def read(run_id: str) -> RunnerRecord | None:
    """The run's runner record; None for a run without one (not made by a runner, or its
    runner died before writing it)."""
    text = read_run_text(run_id, RUNNER_ARTIFACT)
    if not text:
        return None
    try:
        data = json.loads(text)
        known = {f.name for f in fields(RunnerRecord)}  # a newer version may write more
        return RunnerRecord(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError):
        return None


def process_start(pid: int) -> str:
    """When a process started (from /proc), so a recycled pid is not taken for the runner."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def heartbeat_interval() -> float:
    """Seconds between a running run's heartbeats (LUIGIFLOW_HEARTBEAT_S, 60 by default)."""
    return float(os.environ.get("LUIGIFLOW_HEARTBEAT_S", "60"))


def runner_gone(record: RunnerRecord | None, started: float, now: float | None = None) -> bool:
    """Whether the runner of a RUNNING run (started at `started`, seconds since the epoch) is
    gone: on this host, its process is; on another, it missed three heartbeats (at the
    interval the runner itself recorded). Without a record (not written yet, or unreadable),
    the run must be silent for three default intervals since it started."""
    if record is None:
        return (now or time.time()) - started > 3 * heartbeat_interval()
    if record.host == socket.gethostname():
        started = process_start(record.pid) if record.pid else ""
        return not (started and started == record.process_start)
    return (now or time.time()) - record.heartbeat > 3 * record.heartbeat_interval_s


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
        record = read(run.info.run_id)
        if record is None or not runner_gone(record, run.info.start_time / 1000):
            continue  # not a runner's run, or its runner is alive
        try:
            client.set_terminated(run.info.run_id, "KILLED")
        except MlflowException:
            logging.warning("could not mark run %s KILLED", run.info.run_id, exc_info=True)
            continue
        killed.append(run.info.run_id)
        try:
            records.settle_abandoned(run.info.run_id)
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
        while not self.stopped.wait(heartbeat_interval()):
            for run_id in self.run_ids:  # a sweep's parent and children
                try:
                    record = read(run_id)
                    if record is not None and record.owned_by_this_process():
                        record.heartbeat = time.time()
                        write(run_id, record)
                except Exception:  # a missed beat is not a failed run
                    logging.warning("heartbeat of run %s failed", run_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
