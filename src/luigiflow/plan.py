"""The pipeline about to run, worked out and checked before any MLflow run exists.

From the requested task down, Luigi looks at every task whose output is missing. A task whose
output can be reused, named in `[PathConfig]` or found in the tracking store by its
fingerprint, counts as complete, so what lies below it is not needed. Every problem found here
(a missing input file or column, a bad parameter value, an output that cannot be reused) is a
ConfigError: exit status 2 and no run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException

from luigiflow import caching
from luigiflow.config import PATH_SECTION, RUN_SECTION, Config, ConfigError
from luigiflow.settings import Settings
from luigiflow.targets import TaskFolder, client, copy_outputs, run_artifact_uri
from luigiflow.task import STATUS_TAG, PipelineTask
from luigiflow.tracking import check_location

PENDING_RUN = "0" * 32  # run id of the tasks planned before the run exists


@dataclass(frozen=True)
class CacheOptions:
    enabled: bool = True  # look for earlier outputs with the same fingerprint
    force: frozenset[str] = frozenset()  # rerun these tasks and what depends on them
    allow_mismatch: bool = False  # accept a [PathConfig] source made with another config


@dataclass
class Plan:
    root: PipelineTask
    tasks: list[PipelineTask] = field(default_factory=list)  # upstream first
    needed: set[str] = field(default_factory=set)  # families Luigi will look at
    reused: dict[str, str] = field(default_factory=dict)  # family -> source
    cached: set[str] = field(default_factory=set)  # reused because the fingerprint matched
    copied: dict[str, str] = field(default_factory=dict)  # family -> source copied into the run
    reasons: dict[str, str] = field(default_factory=dict)  # family -> why it runs
    mismatches: dict[str, str] = field(default_factory=dict)  # accepted [PathConfig] differences
    fingerprints: caching.Fingerprints = field(default_factory=caching.Fingerprints)

    def for_run(self, run_id: str) -> PipelineTask:
        return self.root.clone(run_id=run_id)

    def task(self, family: str) -> PipelineTask:
        return next(t for t in self.tasks if t.task_family == family)


def make_plan(
    task_class: type[PipelineTask],
    config: Config,
    settings: Settings,
    options: CacheOptions = CacheOptions(),
) -> Plan:
    """Check every task of the pipeline, fingerprint it, and decide what runs and what is reused."""
    plan = Plan(task_class(run_id=PENDING_RUN))
    plan.tasks = _upstream_first(plan.root)
    for name in options.force:
        if name not in {t.task_family for t in plan.tasks}:
            raise ConfigError(
                "--force",
                f"{name} is not part of this pipeline",
                choices=[t.task_family for t in plan.tasks],
                name=name,
            )
    for task in plan.tasks:
        _check_inputs(task, config)

    explicit = {
        t.task_family: config.reuse[t.task_family]
        for t in plan.tasks
        if t.task_family in config.reuse
    }
    recorded_fingerprints = {}
    for family, source in explicit.items():
        manifest = _check_reusable(family, source, config, settings)
        recorded_fingerprints[family] = manifest.get("fingerprint", {})
        plan.fingerprints.sources[family] = recorded_fingerprints[family].get("digest", "")
    # Only once every source is known: a source's expected fingerprint builds on those below it.
    for family, source in explicit.items():
        expected = plan.fingerprints.of(plan.task(family))
        recorded = recorded_fingerprints[family]
        if recorded.get("digest") != expected.digest:
            differences = ", ".join(expected.differences(recorded))
            if not options.allow_mismatch:
                raise ConfigError(
                    config.path,
                    f"{source} was made with another config or input: {differences} "
                    "(reuse it anyway with --allow-mismatch)",
                    PATH_SECTION,
                    family,
                )
            plan.mismatches[family] = differences

    forced = _with_downstream(plan.tasks, options.force)
    experiments = caching.searchable_experiments(client()) if options.enabled else []
    plan.needed.add(plan.root.task_family)
    for task in reversed(plan.tasks):  # every task after all the tasks that require it
        family = task.task_family
        if family not in plan.needed:
            continue
        source = explicit.get(family) if family not in forced else None
        if source is None and options.enabled and family not in forced:
            digest = plan.fingerprints.of(task).digest
            run_id = caching.find_reusable(client(), experiments, family, digest)
            if run_id:
                source = f"runs:/{run_id}/{family}"
                plan.cached.add(family)
                plan.fingerprints.sources[family] = digest
        if source:
            plan.reused[family] = source
            continue
        plan.needed.update(dep.task_family for dep in task.upstream())
        if family in forced:
            plan.reasons[family] = "forced (--force)"
        elif not options.enabled:
            plan.reasons[family] = "cache disabled (--no-cache)"
        else:
            plan.reasons[family] = caching.why_run(
                client(), experiments, plan.fingerprints.of(task)
            )
    # Parameter values only of the tasks that will run: a reused task's values made its
    # outputs already, and checking them can be costly (Trainer imports its estimator).
    for task in plan.tasks:
        if task.task_family in plan.needed and task.task_family not in plan.reused:
            for key, problem in task.validate().items():
                raise ConfigError(config.path, problem, task.task_family, key)
    return plan


def activate(plan: Plan, run_id: str, copy: bool = False) -> None:
    """Hand the plan's decisions to the tasks, in this process and the worker processes it
    forks: where each reused output lives (or a copy of it in this run), and the fingerprints."""
    from luigi.configuration import get_config

    caching.use(plan.fingerprints)
    sources = get_config().data.setdefault(PATH_SECTION, {})
    for task in plan.tasks:  # the plan decides: a forced task ignores its [PathConfig] entry
        sources.pop(task.task_family, None)
    for family, source in list(plan.reused.items()):
        if copy:
            copy_outputs(TaskFolder.from_source(source), TaskFolder(run_id, family))
            plan.copied[family] = plan.reused.pop(family)
        else:
            sources[family] = source


def locate(plan: Plan, run_id: str) -> dict[str, TaskFolder | None]:
    """Where this run's outputs of each task are (`PipelineTask.folder()`): its own, reused, or,
    for a task skipped because a later task was reused, the ones that later task was made from,
    as its manifest records; the skipped task is pointed there like a reused one. None if
    nowhere (a task not run)."""
    from luigi.configuration import get_config

    sources = get_config().data.setdefault(PATH_SECTION, {})
    recorded: dict[str, str] = {}  # family -> source, from the manifests of downstream tasks
    found: dict[str, TaskFolder | None] = {}
    for task in reversed(plan.tasks):  # downstream first
        family = task.task_family
        if family not in plan.needed:  # reused and copied tasks are needed: Luigi checks them
            if family not in recorded:
                found[family] = None
                continue
            sources[family] = recorded[family]
        found[family] = task.clone(run_id=run_id).folder()
        for upstream, source in (found[family].manifest() or {}).get("upstream", {}).items():
            recorded.setdefault(upstream, source)  # the nearest downstream task's record
    return {t.task_family: found[t.task_family] for t in plan.tasks}


def _upstream_first(root: PipelineTask) -> list[PipelineTask]:
    ordered: list[PipelineTask] = []

    def visit(task: PipelineTask) -> None:
        if any(t.task_family == task.task_family for t in ordered):
            return
        for upstream in task.upstream():
            visit(upstream)
        ordered.append(task)

    visit(root)
    return ordered


def _with_downstream(tasks: list[PipelineTask], families: frozenset[str]) -> set[str]:
    found = set(families)
    for task in tasks:  # upstream first, so a task's requirements are decided before it
        if any(dep.task_family in found for dep in task.upstream()):
            found.add(task.task_family)
    return found


def _check_inputs(task: PipelineTask, config: Config) -> None:
    """The input files of one task: present, with the columns it needs."""
    for input_file in task.input_files().values():
        path = config.input_dir / input_file.filename
        if not path.is_file():
            message = f"{input_file.filename} not found in {config.input_dir}"
            raise ConfigError(config.path, message, PATH_SECTION, "input")
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        for column in input_file.columns:
            if column not in header:
                params = task.significant_params()
                key = next(
                    (k for k, v in params.items() if f'"{column}"' in v or v == column), None
                )
                raise ConfigError(
                    config.path,
                    f"{path} has no column '{column}'",
                    task.task_family,
                    key,
                    choices=header,
                    name=column,
                )


def _check_reusable(family: str, source: str, config: Config, settings: Settings) -> dict:
    """A `[PathConfig]` source must hold complete outputs of that task; returns its manifest."""
    folder = TaskFolder.from_source(source)

    def refuse(message: str) -> ConfigError:
        return ConfigError(config.path, message, PATH_SECTION, family)

    if folder.run_id is not None:
        try:
            run = client().get_run(folder.run_id)
        except MlflowException:
            raise refuse(f"run {folder.run_id} not found in the tracking store") from None
        if run.info.lifecycle_stage != "active":
            raise refuse(f"run {folder.run_id} is deleted")
        status = run.data.tags.get(STATUS_TAG.format(folder.name))
        if status in ("FAILED", "KILLED", "RUNNING"):
            raise refuse(
                f"{folder.name} {status} in run {folder.run_id}: its outputs cannot be reused"
            )
        check_location(run_artifact_uri(folder.run_id), settings)
    manifest = folder.manifest()
    if manifest is None:
        raise refuse(f"{source} holds no complete outputs (the task did not finish there)")
    if manifest.get("task") != family:
        raise refuse(f"{source} holds outputs of {manifest.get('task')}, not {family}")
    return manifest


def resolved_config(plan: Plan, config: Config) -> dict[str, dict[str, object]]:
    """Every value the run uses, defaults included: logged as params and as an artifact."""
    resolved: dict[str, dict[str, object]] = {
        RUN_SECTION: dict(config.run),
        PATH_SECTION: {"input": str(config.input_dir), **config.reuse},
    }
    for task in plan.tasks:
        resolved[task.task_family] = dict(task.significant_params())
    return resolved
