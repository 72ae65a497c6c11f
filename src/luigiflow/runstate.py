"""The run's own JSON files in its artifacts (`luigiflow/`), read and written alike.

`context.json`, the run context: what a task needs to know about its run beyond its own
parameters. The plan decides, before the run starts, which tasks run and why, which are reused
and from where, each task's fingerprint and the code it was computed from, the input folder and
the resolved config; that one value is written with the run before any task starts. Every
process that works on the run (the runner, a forked Luigi worker, a process elsewhere that knows
only the run id and the tracking URI) reads it back by the run id. It is also how a task gets
its parameter values: while the plan is made, before the run exists, its tasks are built under
a draft id whose context (`draft`) holds the checked config, so they read their values as a
run's tasks do.

`tasks/<Task>.json`, a task record: what became of one task, written by the process that ran
it (workers on several machines never overwrite each other's bookkeeping). `runner.json`, the
runner record: which process owns the run (host, pid, process start, command line, versions)
and its heartbeat, so that another runner tells a live RUNNING run from one whose runner died.
Both stay out of the run's tags, which are for what people search on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from luigiflow.names import CONTEXT_ARTIFACT, RECORDS_FOLDER, RUNNER_ARTIFACT, record_path
from luigiflow.store import list_run_files, read_run_text, write_run_text
from luigiflow.targets import TaskFolder

RUN, REUSED, COPIED, SKIPPED = "run", "reused", "copied", "skipped"
# In a sweep's child: made once by another child of the sweep (`source`), which this run waits
# for; or a task that publishes outside the run (the registry), left to the sweep's parent.
SHARED, DEFERRED = "shared", "deferred"
FORMAT = 1
RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class TaskPlan:
    """What the plan decided for one task."""

    family: str
    upstream: list[str]  # the families it requires
    decision: str = RUN  # run, reused, copied (into this run), skipped (not needed), shared
    # (made by another child of the sweep) or deferred (left to the sweep's parent)
    source: str | None = None  # where reused (or copied, or skipped) outputs are
    cached: bool = False  # reused because its fingerprint matched (else [PathConfig])
    reason: str = ""  # why it runs
    fingerprint: dict = field(default_factory=dict)  # digest and its parts
    modules: dict[str, str] = field(default_factory=dict)  # project module -> code digest
    mismatch: str = ""  # an accepted difference of a [PathConfig] source (--allow-mismatch)

    @property
    def digest(self) -> str:
        return self.fingerprint.get("digest", "")


@dataclass
class RunContext:
    root: str  # the family of the task the run builds
    input: str  # the input folder as configured: relative to the project root, or absolute
    config: dict[str, dict[str, object]]  # resolved, native TOML types, secrets as references
    tasks: dict[str, TaskPlan]  # upstream first
    scheduler: str = ""  # the luigid the run is built through (workers may join); "": in-process
    # A sweep's registration: the alias moves only to a model better on this metric
    # ({"metric", "direction"}); empty: it always moves.
    promotion: dict[str, str] = field(default_factory=dict)
    label: str = ""  # a sweep's child: its values in words (`Trainer.seed=1`)

    def input_dir(self) -> Path:
        """The input folder on this machine (relative to this checkout's project root)."""
        folder = Path(self.input)
        return folder if folder.is_absolute() else Path(os.environ["PROJECT_ROOT"]) / folder

    def folder(self, family: str, run_id: str) -> TaskFolder:
        """Where the outputs of `family` are for this run: its own folder, or a reused one."""
        entry = self.tasks.get(family)
        if entry is not None and entry.decision in (REUSED, SKIPPED, SHARED) and entry.source:
            return TaskFolder.from_source(entry.source)
        return TaskFolder(run_id, family)

    def made_by(self, family: str, run_id: str) -> str:
        """The run whose task makes `family`'s outputs for this run: the sweep's child that
        shares it, else this run (a reused output is complete, so nothing waits on it)."""
        entry = self.tasks.get(family)
        if entry is not None and entry.decision == SHARED and entry.source:
            return TaskFolder.from_source(entry.source).run_id or run_id
        return run_id

    def decided(self, decision: str) -> dict[str, TaskPlan]:
        return {f: t for f, t in self.tasks.items() if t.decision == decision}

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        data["tasks"] = [asdict(t) for t in self.tasks.values()]
        return json.dumps(data, indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> RunContext:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"run context format {data.get('format')} (expected {FORMAT})")
        tasks = {t["family"]: TaskPlan(**t) for t in data["tasks"]}
        return cls(
            data["root"], data["input"], data["config"], tasks, data.get("scheduler", ""),
            data.get("promotion", {}), data.get("label", ""),
        )  # fmt: skip

    def save(self, run_id: str) -> None:
        write_run_text(run_id, CONTEXT_ARTIFACT, self.to_json())
        _known[run_id] = self


class NoContext(Exception):
    """The run has no run context: not made by this version, or not a pipeline run."""


# The contexts this process knows, by run id: read from the store once (a saved context
# never changes), or drafted by a plan.
_known: dict[str, RunContext] = {}


def draft(config: dict[str, dict[str, object]], root: str, input_folder: str) -> str:
    """A new id under which the plan builds its tasks before the run exists: they read
    `config` (checked, native) from this draft context as a run's tasks read their run's."""
    run_id = uuid.uuid4().hex
    _known[run_id] = RunContext(root, input_folder, config, {})
    return run_id


def load(run_id: str) -> RunContext:
    """The context of a run, read from the store once per process (it never changes)."""
    if run_id not in _known:
        text = read_run_text(run_id, CONTEXT_ARTIFACT)
        if text is None:
            raise NoContext(f"run {run_id} has no {CONTEXT_ARTIFACT}")
        _known[run_id] = RunContext.from_json(text)
    return _known[run_id]


def find(run_id: str) -> RunContext | None:
    """The context of a run, or None when `run_id` is not a run with one (a made-up id in a
    test, a run this runner did not make)."""
    from mlflow.exceptions import MlflowException

    if run_id in _known:
        return _known[run_id]
    if not RUN_ID.fullmatch(run_id):
        return None
    try:
        return load(run_id)
    except (NoContext, MlflowException):
        return None


def _write(run_id: str, path: str, record: object) -> None:
    write_run_text(run_id, path, json.dumps(asdict(record), indent=2))


def _read(run_id: str, path: str, kind: type):
    """The record of type `kind` at `path` of the run's artifacts, or None when there is none;
    keys a newer version writes are left out."""
    text = read_run_text(run_id, path)
    if not text:
        return None
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in json.loads(text).items() if k in known})


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


def write_record(run_id: str, record: TaskRecord) -> None:
    _written_here[(run_id, record.task)] = TaskRecord(**asdict(record))
    _write(run_id, record_path(record.task), record)


def written_here(run_id: str) -> dict[str, TaskRecord]:
    """The last record this process wrote of each of the run's tasks (whether or not the
    store took it). A forked worker's records are its own: the runner does not see them."""
    return {task: record for (run, task), record in _written_here.items() if run == run_id}


def read_record(run_id: str, family: str) -> TaskRecord | None:
    return _read(run_id, record_path(family), TaskRecord)


def read_records(run_id: str, families: list[str]) -> dict[str, TaskRecord]:
    """The records of these tasks that exist (a task that never started has none)."""
    found = {family: read_record(run_id, family) for family in families}
    return {family: record for family, record in found.items() if record is not None}


def read_listed_records(run_id: str, families: list[str]) -> tuple[dict[str, TaskRecord], set[str]]:
    """The records of these tasks in the store, and the tasks whose record the store could
    not give (it failed, or the record was listed but could not be read): a task without a
    record never started, one without an answer may have. Raises when the store cannot
    list the records at all."""
    listed = set(list_run_files(run_id, RECORDS_FOLDER))
    found, unread = {}, set()
    for family in families:
        if f"{family}.json" not in listed:
            continue
        record = read_record(run_id, family)
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
            write_record(run_id, record)


def settle_abandoned(run_id: str) -> None:
    """A run marked KILLED because its runner died outright: its records still RUNNING (the
    runner could not end them) say KILLED too, so that records agree with the run's status."""
    families = [Path(name).stem for name in list_run_files(run_id, RECORDS_FOLDER)]
    settle(run_id, read_records(run_id, families), KILLED)


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


def write_runner_record(run_id: str, record: RunnerRecord) -> None:
    _write(run_id, RUNNER_ARTIFACT, record)


def read_runner_record(run_id: str) -> RunnerRecord | None:
    """The run's runner record; None for a run without one (not made by a runner, or its
    runner died before writing it), or one that cannot be read."""
    try:
        return _read(run_id, RUNNER_ARTIFACT, RunnerRecord)
    except (ValueError, TypeError):
        return None


def process_start(pid: int) -> str:
    """When a live process started (from /proc), so a recycled pid is not taken for the
    runner; "" for none, or for a zombie (a runner killed with `kill -9` whose parent died
    too or never reaps it: its pid stays in /proc, its process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state, *fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "" if state in ("Z", "X") or len(fields) < 19 else fields[18]


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
