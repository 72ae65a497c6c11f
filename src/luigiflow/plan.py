"""The pipeline about to run, worked out and checked before any MLflow run exists.

From the requested task down, Luigi will look at every task whose output is missing; a task
reused from `[PathConfig]` counts as complete, so what lies below it is not needed. Every
problem found here (a missing input file or column, a bad parameter value, an output that
cannot be reused) is a ConfigError: exit status 2 and no run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException

from luigiflow.config import PATH_SECTION, RUN_SECTION, Config, ConfigError
from luigiflow.settings import Settings
from luigiflow.targets import TaskFolder, client, run_artifact_uri
from luigiflow.task import STATUS_TAG, PipelineTask
from luigiflow.tracking import check_location

PENDING_RUN = "0" * 32  # run id of the tasks planned before the run exists


@dataclass
class Plan:
    root: PipelineTask
    tasks: list[PipelineTask] = field(default_factory=list)  # upstream first
    needed: set[str] = field(default_factory=set)  # families Luigi will look at
    reused: dict[str, str] = field(default_factory=dict)  # family -> source

    def for_run(self, run_id: str) -> PipelineTask:
        return self.root.clone(run_id=run_id)


def make_plan(task_class: type[PipelineTask], config: Config, run_id: str = PENDING_RUN) -> Plan:
    plan = Plan(task_class(run_id=run_id))

    def visit(task: PipelineTask, needed: bool) -> None:
        family = task.task_family
        if needed:
            plan.needed.add(family)
        if any(t.task_family == family for t in plan.tasks):
            return
        reused = config.reuse.get(family)
        if reused and needed:
            plan.reused[family] = reused
        for upstream in task.upstream():
            visit(upstream, needed and not reused)
        plan.tasks.append(task)

    visit(plan.root, True)
    return plan


def check(plan: Plan, config: Config, settings: Settings) -> None:
    """Parameter values, input files and reuse sources of the tasks that will be looked at."""
    for task in plan.tasks:
        family = task.task_family
        if family not in plan.needed or family in plan.reused:
            continue
        for key, problem in task.validate().items():
            raise ConfigError(config.path, problem, family, key)
        for input_file in task.input_files().values():
            _check_input_file(task, config, input_file.filename, input_file.columns)
    for family, source in plan.reused.items():
        _check_reusable(family, source, config, settings)


def _check_input_file(task: PipelineTask, config: Config, filename: str, columns: tuple) -> None:
    path = config.input_dir / filename
    if not path.is_file():
        raise ConfigError(
            config.path, f"{filename} not found in {config.input_dir}", PATH_SECTION, "input"
        )
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    for column in columns:
        if column not in header:
            params = task.significant_params()
            key = next((k for k, v in params.items() if f'"{column}"' in v or v == column), None)
            raise ConfigError(
                config.path,
                f"{path} has no column '{column}'",
                task.task_family,
                key,
                choices=header,
                name=column,
            )


def _check_reusable(family: str, source: str, config: Config, settings: Settings) -> None:
    folder = TaskFolder.from_source(source)
    if folder.run_id is not None:
        try:
            run = client().get_run(folder.run_id)
        except MlflowException:
            raise ConfigError(
                config.path,
                f"run {folder.run_id} not found in the tracking store",
                PATH_SECTION,
                family,
            ) from None
        if run.info.lifecycle_stage != "active":
            raise ConfigError(config.path, f"run {folder.run_id} is deleted", PATH_SECTION, family)
        status = run.data.tags.get(STATUS_TAG.format(folder.name))
        if status in ("FAILED", "KILLED", "RUNNING"):
            raise ConfigError(
                config.path,
                f"{folder.name} {status} in run {folder.run_id}: its outputs cannot be reused",
                PATH_SECTION,
                family,
            )
        check_location(run_artifact_uri(folder.run_id), settings)
    manifest = folder.manifest()
    if manifest is None:
        raise ConfigError(
            config.path,
            f"{source} holds no complete outputs (the task did not finish there)",
            PATH_SECTION,
            family,
        )
    if manifest.get("task") != family:
        raise ConfigError(
            config.path,
            f"{source} holds outputs of {manifest.get('task')}, not {family}",
            PATH_SECTION,
            family,
        )


def resolved_config(plan: Plan, config: Config) -> dict[str, dict[str, object]]:
    """Every value the run uses, defaults included: logged as params and as an artifact."""
    resolved: dict[str, dict[str, object]] = {
        RUN_SECTION: dict(config.run),
        PATH_SECTION: {"input": str(config.input_dir), **config.reuse},
    }
    for task in plan.tasks:
        if task.task_family in plan.needed and task.task_family not in plan.reused:
            resolved[task.task_family] = dict(task.significant_params())
    return resolved
