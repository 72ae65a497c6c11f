"""Automatic reuse: never recompute what any earlier run already made.

Each task has a fingerprint: its family, its significant parameters, the fingerprints of the
tasks it requires, the content of the input files it reads, its code, and the versions of the
libraries that shape its output. The run id, the description and the worker count never enter
it. A finished task tags its run with the fingerprint, so the tracking store is the index and
run artifacts are the cache: a later run anywhere on the same store finds them by tag.

Code is the task's module and every project module it imports, anywhere in its source and
through other helpers (`sourcecode`), compared as syntax trees: comments, docstrings and
formatting do not count, any change to what the code does does. Library code does not count
(its version does), nor does luigiflow's own: it moves outputs around but does not shape them,
and counting it would throw every cache away on each upgrade (`--force` and `--no-cache` are
there when a user wants otherwise).

The plan computes fingerprints once, before the run; tasks read theirs from the run context.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from luigiflow import models, runstate
from luigiflow.config import PATH_SECTION, Config, ConfigError
from luigiflow.formats import BrokenOutput, sha256_file
from luigiflow.names import BROKEN_TAG, FINGERPRINT_TAG, recorded_manifest_digest
from luigiflow.settings import Settings
from luigiflow.sourcecode import code_digest, module_digests, version
from luigiflow.store import check_location, client, run_artifact_uri
from luigiflow.targets import TaskFolder

if TYPE_CHECKING:
    from luigiflow.runstate import RunContext
    from luigiflow.task import PipelineTask

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


class Fingerprints:
    """The fingerprints of one pipeline, computed once each, for the plan.

    A reused task's fingerprint is the one its source recorded (what its outputs really are),
    so what is built on it is fingerprinted on what it was built from.
    """

    def __init__(self, input_dir: Path, dataset: Mapping[str, object] | None = None) -> None:
        self.input_dir = input_dir
        # [Dataset] shapes every task's outputs: its values are part of every fingerprint.
        self.dataset = {f"Dataset.{k}": json.dumps(v) for k, v in (dataset or {}).items()}
        self._computed: dict[str, Fingerprint] = {}
        self.sources: dict[str, str] = {}  # family -> fingerprint of the output reused for it

    def of(self, task: PipelineTask) -> Fingerprint:
        """What the current config, inputs and code make of `task`."""
        key = task.task_family + json.dumps(task.significant_params(), sort_keys=True)
        if key not in self._computed:
            self._computed[key] = Fingerprint(
                task=task.task_family,
                params={**self.dataset, **task.significant_params()},
                inputs={
                    **{
                        f.filename: file_digest(self.input_dir / f.filename)
                        for f in task.input_files().values()
                    },
                    **task.external_state(),
                },
                upstream={dep.task_family: self.digest(dep) for dep in task.upstream()},
                code=code_digest(type(task), source_root(type(task))),
                versions={name: version(name) for name in SHAPING_LIBRARIES},
            )
        return self._computed[key]

    def digest(self, task: PipelineTask) -> str:
        return self.sources.get(task.task_family) or self.of(task).digest


def deferred(digest: str) -> str:
    """What a task built on a deferred one (see `plan`) is fingerprinted on in its stead."""
    return hashlib.sha256(f"deferred:{digest}".encode()).hexdigest()


def modules_of(cls: type) -> dict[str, str]:
    """The project modules a task's code digest covers, each with its own digest."""
    return module_digests(cls, source_root(cls))


def code_differences(context: RunContext, task_classes: Mapping[str, type]) -> str:
    """Which tasks' code differs from the code the run was planned with, and in which modules
    (empty when none): `Trainer (tasks.helpers, tasks.trainer)`."""
    found = []
    for family, entry in context.tasks.items():
        if not entry.modules or family not in task_classes:
            continue
        current = modules_of(task_classes[family])
        modules = sorted(
            m for m in {*current, *entry.modules} if current.get(m) != entry.modules.get(m)
        )
        if modules:
            found.append(f"{family} ({', '.join(modules)})")
    return "; ".join(found)


def source_root(cls: type) -> Path:
    """The folder holding the task's top-level package (`src/` in this project)."""
    top = sys.modules[cls.__module__.partition(".")[0]]
    path = Path(inspect.getfile(top))
    return path.parent.parent if path.name == "__init__.py" else path.parent


@dataclass
class Lookup:
    """What the store holds for a fingerprint: the newest verified outputs, and the ones that
    failed verification on the way (tagged, so that they are never offered again)."""

    run_id: str | None
    rejected: list[str] = field(default_factory=list)


def find_reusable(client: MlflowClient, experiments: list[str], family: str, digest: str) -> Lookup:
    """The newest run, in any experiment, holding complete and verified outputs of `family`
    with this fingerprint (deleted runs are not searched; runs whose artifacts are gone, and
    outputs made before manifests recorded digests, are passed over)."""
    lookup = Lookup(None)
    # `<digest>:<manifest digest>`, or a bare `<digest>` on a run made before the two joined
    for run in runs_with(client, experiments, family, f"LIKE '{digest}%'", max_results=20):
        tags, run_id = run.data.tags, run.info.run_id
        if BROKEN_TAG.format(family) in tags:  # found broken before: said, never used
            lookup.rejected.append(tags[BROKEN_TAG.format(family)])
            continue
        recorded = recorded_manifest_digest(tags, family)
        if recorded is None:
            continue
        folder = TaskFolder(run_id, family)
        try:
            manifest = folder.manifest()
            if not manifest or manifest.get("fingerprint", {}).get("digest") != digest:
                continue
            models.verify_outputs(folder, recorded)
        except BrokenOutput as error:
            lookup.rejected.append(str(error))
            folder.mark_broken(str(error))
            continue
        except (OSError, ValueError, MlflowException):  # gone, unreadable or unreachable
            continue
        lookup.run_id = run_id
        return lookup
    return lookup


def searchable_experiments(client: MlflowClient) -> list[str]:
    """Every active experiment on the store: a colleague's runs are reused too."""
    return [e.experiment_id for e in client.search_experiments()]


def runs_with(
    client: MlflowClient, experiments: list[str], family: str, condition: str, max_results: int
) -> list:
    """The newest runs first whose fingerprint tag for `family` meets `condition`."""
    if not experiments:
        return []
    return client.search_runs(
        experiments,
        f"tags.`{FINGERPRINT_TAG.format(family)}` {condition}",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def file_digest(path: Path) -> str:
    """The sha256 of a file's content, computed once per version of the file."""
    stat = path.stat()
    return _content_digest(path, stat.st_mtime_ns, stat.st_size)


@cache
def _content_digest(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def check_reusable(family: str, source: str, config: Config, settings: Settings) -> dict:
    """A `[PathConfig]` source must hold complete, verified outputs of that task; returns its
    manifest. Outputs of a run are verified against the digest that run recorded; a plain
    folder only against its own manifest (nobody else vouches for it)."""
    folder = TaskFolder.from_source(source)

    def refuse(message: str) -> ConfigError:
        return ConfigError(config.source(PATH_SECTION, family), message, PATH_SECTION, family)

    recorded = None
    if folder.run_id is not None:
        recorded = _recorded_digest(folder, settings, refuse)
    elif settings.embedded_store and folder.folder.resolve().is_relative_to(
        settings.artifact_root.resolve()
    ):  # a run's folder: only its run can vouch for it, so name the run
        raise refuse(f"{source} is a run's artifact folder: give runs:/<run_id>/{family}")
    manifest = folder.manifest()
    if manifest is None:
        raise refuse(f"{source} holds no complete outputs (the task did not finish there)")
    if manifest.get("task") != family:
        raise refuse(f"{source} holds outputs of {manifest.get('task')}, not {family}")
    try:
        models.verify_outputs(folder, recorded)
    except BrokenOutput as error:
        raise refuse(f"not used: {error}") from None
    return manifest


def _recorded_digest(folder: TaskFolder, settings: Settings, refuse) -> str:
    """The manifest digest a source run recorded, once the run is found fit to reuse from."""
    try:
        run = client().get_run(folder.run_id)
    except MlflowException:
        raise refuse(f"run {folder.run_id} not found in the tracking store") from None
    if run.info.lifecycle_stage != "active":
        raise refuse(f"run {folder.run_id} is deleted")
    check_location(run_artifact_uri(folder.run_id), settings)
    recorded = recorded_manifest_digest(run.data.tags, folder.name)
    if recorded is None:
        record = runstate.read_record(folder.run_id, folder.name)
        if record is not None and record.status != runstate.FINISHED:
            raise refuse(
                f"{folder.name} {record.status} in run {folder.run_id}: "
                "its outputs cannot be reused"
            )
        raise refuse(f"runs:/{folder.run_id}/{folder.name} has no recorded manifest digest")
    return recorded
