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

from luigiflow.names import record_path
from luigiflow.targets import read_run_text, write_run_text

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


def write(run_id: str, record: TaskRecord) -> None:
    write_run_text(run_id, record_path(record.task), json.dumps(asdict(record), indent=2))


def read(run_id: str, family: str) -> TaskRecord | None:
    text = read_run_text(run_id, record_path(family))
    return TaskRecord(**json.loads(text)) if text else None


def read_all(run_id: str, families: list[str]) -> dict[str, TaskRecord]:
    """The records of these tasks that exist (a task that never started has none)."""
    found = {family: read(run_id, family) for family in families}
    return {family: record for family, record in found.items() if record is not None}


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
