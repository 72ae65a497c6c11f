"""The run context: what a task needs to know about its run beyond its own parameters.

The plan decides, before the run starts, which tasks run and why, which are reused and from
where, each task's fingerprint and the code it was computed from, the input folder and the
resolved config. That decision is one value, written with the run (`luigiflow/context.json`)
before any task starts. Every process that works on the run reads it back from the store by
the run id: the runner itself, a forked Luigi worker, or a process started elsewhere that
knows only the run id and the tracking URI. It is also how a task gets its parameter values:
while the plan is made, before the run exists, its tasks are built under a draft id whose
context (`draft`) holds the checked config, so they read their values as a run's tasks do.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from luigiflow.names import CONTEXT_ARTIFACT
from luigiflow.targets import TaskFolder, read_run_text, write_run_text

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
