"""The run context: what a task needs to know about its run beyond its own parameters.

The plan decides, before the run starts, which tasks run and why, which are reused and from
where, each task's fingerprint and the code it was computed from, the input folder and the
resolved config. That decision is one value, written with the run (`luigiflow/context.json`)
before any task starts. Every process that works on the run reads it back from the store by
the run id: the runner itself, a forked Luigi worker, or a process started elsewhere that
knows only the run id and the tracking URI. Nothing about a run lives in a module global.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from luigiflow.names import CONTEXT_ARTIFACT
from luigiflow.targets import TaskFolder, read_run_text, write_run_text

RUN, REUSED, COPIED, SKIPPED = "run", "reused", "copied", "skipped"
FORMAT = 1


@dataclass
class TaskPlan:
    """What the plan decided for one task."""

    family: str
    upstream: list[str]  # the families it requires
    decision: str = RUN  # run, reused, copied (into this run) or skipped (not needed)
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

    def input_dir(self) -> Path:
        """The input folder on this machine (relative to this checkout's project root)."""
        folder = Path(self.input)
        return folder if folder.is_absolute() else Path(os.environ["PROJECT_ROOT"]) / folder

    def folder(self, family: str, run_id: str) -> TaskFolder:
        """Where the outputs of `family` are for this run: its own folder, or a reused one."""
        entry = self.tasks.get(family)
        if entry is not None and entry.decision in (REUSED, SKIPPED) and entry.source:
            return TaskFolder.from_source(entry.source)
        return TaskFolder(run_id, family)

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
        return cls(data["root"], data["input"], data["config"], tasks, data.get("scheduler", ""))

    def save(self, run_id: str) -> None:
        write_run_text(run_id, CONTEXT_ARTIFACT, self.to_json())


class NoContext(Exception):
    """The run has no run context: not made by this version, or not a pipeline run."""


@cache
def load(run_id: str) -> RunContext:
    """The context of a run, read from the store once per process (it never changes)."""
    text = read_run_text(run_id, CONTEXT_ARTIFACT)
    if text is None:
        raise NoContext(f"run {run_id} has no {CONTEXT_ARTIFACT}")
    return RunContext.from_json(text)
