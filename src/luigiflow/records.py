"""One record per task: what became of it in this run, written by the process that ran it.

Each task writes its own file (`luigiflow/tasks/<Task>.json` in the run's artifacts), so
workers on several machines never overwrite each other's bookkeeping, and the run's tags stay
for what people search on (only a finished task's fingerprint is a tag). The summary, the report
and later runs read the records from there; what the plan decided (reused, skipped, why a task
runs) is in the run context and is not repeated here.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from luigiflow.names import RECORDS_FOLDER, record_path
from luigiflow.targets import list_run_files, read_run_text, write_run_text

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


@dataclass
class TaskRecord:
    task: str
    status: str
    why_run: str = ""
    host: str = ""
    pid: int = 0
    started: str = ""  # ISO 8601, UTC
    ended: str = ""
    duration_s: float | None = None
    user_code_s: float | None = None
    error: str = ""  # the last line of the traceback, when it failed
    attempts: list[dict] = field(default_factory=list)  # each: attempt, status, duration, error

    @classmethod
    def begin(cls, task: str, why_run: str) -> TaskRecord:
        return cls(task, RUNNING, why_run, socket.gethostname(), os.getpid(), now())

    def end(self, status: str, seconds: float, user_seconds: float, error: str = "") -> None:
        self.status, self.ended, self.error = status, now(), error
        self.duration_s, self.user_code_s = round(seconds, 3), round(user_seconds, 3)


# What this process itself recorded of its tasks, by run and task: when the store fails at
# the end of a run, the summary still says what the tasks that ran here did.
_written_here: dict[tuple[str, str], TaskRecord] = {}


def write(run_id: str, record: TaskRecord) -> None:
    _written_here[(run_id, record.task)] = TaskRecord(**asdict(record))
    write_run_text(run_id, record_path(record.task), json.dumps(asdict(record), indent=2))


def written_here(run_id: str) -> dict[str, TaskRecord]:
    """The last record this process wrote of each of the run's tasks (whether or not the
    store took it). A forked worker's records are its own: the runner does not see them."""
    return {task: record for (run, task), record in _written_here.items() if run == run_id}


def read(run_id: str, family: str) -> TaskRecord | None:
    text = read_run_text(run_id, record_path(family))
    return TaskRecord(**json.loads(text)) if text else None


def read_all(run_id: str, families: list[str]) -> dict[str, TaskRecord]:
    """The records of these tasks that exist (a task that never started has none)."""
    found = {family: read(run_id, family) for family in families}
    return {family: record for family, record in found.items() if record is not None}


def read_listed(run_id: str, families: list[str]) -> tuple[dict[str, TaskRecord], set[str]]:
    """The records of these tasks in the store, and the tasks whose record the store could
    not give (it failed, or the record was listed but could not be read): a task without a
    record never started, one without an answer may have. Raises when the store cannot
    list the records at all."""
    listed = set(list_run_files(run_id, RECORDS_FOLDER))
    found, unread = {}, set()
    for family in families:
        if f"{family}.json" not in listed:
            continue
        record = read(run_id, family)
        if record is None:
            unread.add(family)
        else:
            found[family] = record
    return found, unread


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def settle(run_id: str, found: dict[str, TaskRecord], run_status: str) -> None:
    """Records still RUNNING when the run ended (a task interrupted in a worker process that
    could not say so) take the run's status."""
    status = KILLED if run_status == KILLED else FAILED
    for record in found.values():
        if record.status == RUNNING:
            record.status = status
            write(run_id, record)


def settle_abandoned(run_id: str) -> None:
    """A run marked KILLED because its runner died outright: its records still RUNNING (the
    runner could not end them) say KILLED too, so that records agree with the run's status."""
    families = [Path(name).stem for name in list_run_files(run_id, RECORDS_FOLDER)]
    settle(run_id, read_all(run_id, families), KILLED)
