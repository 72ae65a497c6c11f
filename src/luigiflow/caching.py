"""Automatic reuse: never recompute what any earlier run already made.

Each task has a fingerprint: its family, its significant parameters, the fingerprints of the
tasks it requires, the content of the input files it reads, its code, and the versions of the
libraries that shape its output. The run id, the description and the worker count never enter
it. A finished task tags its run with the fingerprint, so the tracking store is the index and
run artifacts are the cache: a later run anywhere on the same store finds them by tag.

Code is the task's module and the project modules it uses from the same package, compared as
syntax trees: comments, docstrings and formatting do not count, any change to what the code
does does. luigiflow's own code does not count either: it moves outputs around but does not
shape them, and counting it would throw every cache away on each upgrade (`--force` and
`--no-cache` are there when a user wants otherwise).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import sys
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from luigi.configuration import get_config
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from luigiflow.task import PipelineTask

FINGERPRINT_TAG = "luigiflow.task.{}.fingerprint"
SHAPING_LIBRARIES = ("scikit-learn", "pandas", "numpy")


@dataclass(frozen=True)
class Fingerprint:
    task: str
    params: dict[str, str]
    inputs: dict[str, str]  # input file -> sha256 of its content; plus external_state()
    upstream: dict[str, str]  # required task -> its fingerprint
    code: str  # hash of the task's code
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def as_dict(self) -> dict:
        return {"digest": self.digest, **asdict(self)}

    def differences(self, earlier: dict) -> list[str]:
        """Why this fingerprint differs from an earlier one (from a manifest), in words."""
        reasons = []
        old_params = earlier.get("params", {})
        for key in sorted(set(old_params) | set(self.params)):
            old, new = old_params.get(key, "(unset)"), self.params.get(key, "(unset)")
            if old != new:
                reasons.append(f"{self.task}.{key} {old} → {new}")
        old_inputs = earlier.get("inputs", {})
        for name in sorted(set(old_inputs) | set(self.inputs)):
            if old_inputs.get(name) != self.inputs.get(name):
                reasons.append(f"input {name} changed")
        if earlier.get("code") != self.code:
            reasons.append(f"code of {self.task} changed")
        old_upstream = earlier.get("upstream", {})
        for name in sorted(set(old_upstream) | set(self.upstream)):
            if old_upstream.get(name) != self.upstream.get(name):
                reasons.append(f"upstream {name} changed")
        old_versions = earlier.get("versions", {})
        for name in sorted(self.versions):
            if old_versions.get(name) != self.versions[name]:
                reasons.append(f"{name} {old_versions.get(name, '?')} → {self.versions[name]}")
        return reasons or ["fingerprint changed"]


class Fingerprints:
    """The fingerprints of one pipeline, computed once each.

    A reused task's fingerprint is the one its source recorded (what its outputs really are),
    so what is built on it is fingerprinted on what it was built from.
    """

    def __init__(self) -> None:
        self._computed: dict[str, Fingerprint] = {}
        self.sources: dict[str, str] = {}  # family -> fingerprint of the output reused for it

    def of(self, task: PipelineTask) -> Fingerprint:
        """What the current config, inputs and code make of `task`."""
        key = task.task_family + json.dumps(task.significant_params(), sort_keys=True)
        if key not in self._computed:
            input_dir = Path(get_config().get("PathConfig", "input"))
            self._computed[key] = Fingerprint(
                task=task.task_family,
                params=task.significant_params(),
                inputs={
                    **{
                        f.filename: file_digest(input_dir / f.filename)
                        for f in task.input_files().values()
                    },
                    **task.external_state(),
                },
                upstream={dep.task_family: self.digest(dep) for dep in task.upstream()},
                code=code_digest(type(task)),
                versions={name: version(name) for name in SHAPING_LIBRARIES},
            )
        return self._computed[key]

    def digest(self, task: PipelineTask) -> str:
        return self.sources.get(task.task_family) or self.of(task).digest


_current = Fingerprints()  # the runner's plan, installed before the build; workers inherit it


def current() -> Fingerprints:
    return _current


def use(fingerprints: Fingerprints) -> None:
    global _current
    _current = fingerprints


def find_reusable(
    client: MlflowClient, experiments: list[str], family: str, digest: str
) -> str | None:
    """The newest run, in any experiment, holding complete outputs of `family` with this
    fingerprint (deleted runs are not searched; runs whose artifacts are gone are skipped)."""
    for run in _runs_with(client, experiments, family, f"= '{digest}'", max_results=20):
        manifest = _manifest(run.info.run_id, family)
        if manifest and manifest.get("fingerprint", {}).get("digest") == digest:
            return run.info.run_id
    return None


def why_run(client: MlflowClient, experiments: list[str], fingerprint: Fingerprint) -> str:
    """Why the task must run: what differs from its newest earlier run."""
    earlier = _runs_with(client, experiments, fingerprint.task, "LIKE '%'", max_results=1)
    if not earlier:
        return "no earlier run"
    run_id = earlier[0].info.run_id
    manifest = _manifest(run_id, fingerprint.task)
    if manifest is None:
        return f"outputs of run {run_id} are gone"
    recorded = manifest.get("fingerprint", {})
    if recorded.get("digest") == fingerprint.digest:
        return f"outputs of run {run_id} are gone"
    return ", ".join(fingerprint.differences(recorded))


def searchable_experiments(client: MlflowClient) -> list[str]:
    """Every active experiment on the store: a colleague's runs are reused too."""
    return [e.experiment_id for e in client.search_experiments()]


def _runs_with(
    client: MlflowClient, experiments: list[str], family: str, condition: str, max_results: int
) -> list:
    if not experiments:
        return []
    return client.search_runs(
        experiments,
        f"tags.`{FINGERPRINT_TAG.format(family)}` {condition}",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def _manifest(run_id: str, family: str) -> dict | None:
    from luigiflow.targets import TaskFolder

    try:
        return TaskFolder(run_id, family).manifest()
    except (OSError, MlflowException):  # artifacts removed (`mlflow gc`) or unreachable
        return None


@cache
def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def code_digest(cls: type) -> str:
    """The task's module and the project modules it draws on, as syntax without comments."""
    digest = hashlib.sha256()
    for module in sorted(_project_modules(sys.modules[cls.__module__]), key=lambda m: m.__name__):
        digest.update(module.__name__.encode())
        digest.update(_normalized_source(module).encode())
    return digest.hexdigest()


def _project_modules(module: ModuleType) -> set[ModuleType]:
    """`module` and, transitively, the modules of its package that it takes names from."""
    package = module.__name__.partition(".")[0]
    found, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        for value in vars(current).values():
            owner = (
                value
                if isinstance(value, ModuleType)
                else sys.modules.get(getattr(value, "__module__", "") or "")
            )
            if (
                owner is not None
                and owner.__name__.partition(".")[0] == package
                and owner not in found
            ):
                todo.append(owner)
    return found


def _normalized_source(module: ModuleType) -> str:
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
            node.body = body[1:] or [ast.Pass()]  # a docstring is not behaviour
    return ast.dump(tree, annotate_fields=False)
