"""The base class of every pipeline task: paths, formats, atomic outputs and tracking.

A user task says what it needs (`@requires`), what it makes (`outputs`) and how (`run`); it
reads with `load()` and writes with `save()` / `save_model()` and never sees a path. What a
task knows about its run (where reused outputs are, its fingerprint, the input folder) comes
from the run context, read from the store by the run id, so a task behaves the same in the
runner's process, in a forked Luigi worker and in a process on another machine. MLflow is
reached through `MlflowClient` with that run id, never through the fluent "active run".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import luigi
from luigi.parameter import ParameterVisibility

from luigiflow import cards, formats, models
from luigiflow.attempt import Attempt, tracked
from luigiflow.config import DATASET_SECTION
from luigiflow.inputs import Dataset, DatasetError, InputFile
from luigiflow.redact import ENV_REFERENCE, Redactor, is_secret_key
from luigiflow.runstate import DEFERRED, RunContext, find, load
from luigiflow.store import client
from luigiflow.targets import ArtifactTarget, TaskFolder
from luigiflow.values import argument


@dataclass(frozen=True)
class RegisteredModel:
    """Where a task that publishes adds a model version: `models:/<name>@<alias>`, set in
    the task's section `section` of luigi.toml (which messages name). Before the run, and
    again as it registers, the model is compared with the alias's holder: another kind of
    model (other input columns, target or problem type) is refused unless `replace_schema`."""

    name: str
    alias: str
    section: str
    replace_schema: bool = False


class AmbiguousInput(Exception):
    """Two upstream tasks make an output of the same name, and `load` did not say which."""


def requires(*upstream: type[PipelineTask]) -> Callable[[type[PipelineTask]], type[PipelineTask]]:
    """Declare the tasks whose outputs a task reads.

    Unlike `luigi.util.requires`, the upstream's parameters are not copied onto the task: each
    task keeps its own `[Section]` in luigi.toml. Only the run id is passed along: this run's,
    or, in a sweep, that of the child that makes a task shared by several children (so Luigi
    runs it once and every child waits for it).
    """

    def decorate(cls: type[PipelineTask]) -> type[PipelineTask]:
        def requires(self: PipelineTask) -> dict[str, PipelineTask]:
            context = find(self.run_id)
            return {
                task.get_task_family(): task(
                    run_id=context.made_by(task.get_task_family(), self.run_id)
                    if context
                    else self.run_id
                )
                for task in upstream
            }

        cls.requires = requires
        return cls

    return decorate


class PipelineTask(luigi.Task):
    """Subclass it, declare `outputs` and write `run()`; see `src/tasks/` for examples."""

    run_id = luigi.Parameter(description="the MLflow run this task logs into (set by the runner)")
    # Any task's section may set these; they do not change what a task makes, so they are
    # not significant (out of task ids and fingerprints).
    retries = luigi.NumericalParameter(
        default=0,
        var_type=int,
        min_value=0,
        max_value=100,
        significant=False,
        description="extra attempts when run() fails, each from an empty output folder",
    )
    timeout_s = luigi.NumericalParameter(
        default=0.0,
        var_type=float,
        min_value=0.0,
        max_value=1e9,
        significant=False,
        description="fail an attempt that runs longer than this many seconds (0: no limit)",
    )

    #: output name -> file (or folder, for a model) inside the task's artifact folder
    outputs: ClassVar[dict[str, str]] = {}
    #: True for a task that changes something outside its run (the Model Registry): in a sweep
    #: the children leave it to the parent, which runs it once, for the winning child
    publishes: ClassVar[bool] = False
    _attempt: Attempt | None = None  # set while run() is under way

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for klass in cls.__mro__:  # inherited ones too: a mixin's `api_token`
            for name, param in vars(klass).items():
                if isinstance(param, luigi.Parameter) and is_secret_key(name):
                    # Out of task ids, the scheduler, fingerprints, manifests and cards.
                    param.visibility = ParameterVisibility.PRIVATE
        if "run" in cls.__dict__:
            cls.run = tracked(cls.__dict__["run"])

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        """A task's parameters are those of its run: the values in the run's context (a
        draft one while the plan is made), the one channel by which config reaches a task,
        in the runner as in a worker on another machine. Luigi's config gives none."""
        run_id = kwargs.get("run_id", args[0] if args else None)
        given = _run_values(cls, str(run_id)) if run_id else {}
        return super().get_param_values(params, args, {**given, **kwargs})

    def complete(self) -> bool:
        """Complete when its outputs are; a task deferred to a sweep's parent counts as
        complete in the child (what follows it there does not wait for it)."""
        context = find(self.run_id)
        entry = context.tasks.get(self.task_family) if context else None
        return (entry is not None and entry.decision == DEFERRED) or super().complete()

    # what the task reads and makes -----------------------------------------------------------
    def input_files(self) -> dict[str, InputFile]:
        """External files read from `[PathConfig] input`; checked before the run starts."""
        return {}

    def implied_values(self) -> dict[str, object]:
        """Values of parameters left out of the config that the task decides from the data
        (the Trainer's estimator, by problem type). The plan writes them in, so the run
        records, names, fingerprints and shows what it uses, as if it had been written."""
        return {}

    def validate(self) -> dict[str, str]:
        """Check parameter values before the run starts: {parameter: what is wrong}. Asked only
        of tasks that will run (a reused task's values already made its outputs)."""
        return {}

    def external_state(self) -> dict[str, str]:
        """What the task reads from outside the pipeline besides input files (a registered
        model, say), described so that a change invalidates its cached outputs."""
        return {}

    def registers(self) -> RegisteredModel | None:
        """The registered model this task adds a version to, if it does: checked before the
        run (see `RegisteredModel`)."""
        return None

    def metric_names(self) -> tuple[str, ...]:
        """The metrics `run()` may log with this config, so that `[Sweep] select` is checked
        against them before any run exists (a task's `duration_s/<Task>` counts anyway)."""
        return ()

    def conclusions(self) -> dict[str, str]:
        """What the run should say about this task's outputs (a verdict, a registration):
        tagged `luigiflow.<key>` on the run and printed in the summary, even when reused."""
        return {}

    def upstream(self) -> list[PipelineTask]:
        """The tasks this one requires, whatever shape `requires()` returns them in."""
        return list(luigi.task.flatten(self.requires()))

    @property
    def context(self) -> RunContext:
        return load(self.run_id)

    @property
    def dataset(self) -> Dataset:
        """What the data is: `[Dataset]`, completed from train.csv before the run (id and
        target columns, problem type, feature columns)."""
        context = find(self.run_id)
        values = context.config.get(DATASET_SECTION) if context else None
        if not values:
            raise DatasetError(
                "id_column",
                f"required: {self.task_family} reads the id and target columns from [Dataset]",
            )
        return Dataset.from_config(values)

    def fingerprint(self) -> dict:
        """This task's fingerprint in this run (a reused task's: the one its source recorded)."""
        return self.context.tasks[self.task_family].fingerprint

    def folder(self) -> TaskFolder:
        return self.context.folder(self.task_family, self.run_id)

    def output(self) -> dict[str, ArtifactTarget]:
        folder = self.folder()
        return {name: ArtifactTarget(folder, filename) for name, filename in self.outputs.items()}

    # reading ----------------------------------------------------------------------------------
    def input_path(self, name: str, of: type[PipelineTask] | str | None = None) -> Path:
        """A local path to an external input file (`input_files`) or an upstream output;
        `of` names the upstream task when two of them make an output called `name`."""
        found = self.input_target(name, of)
        return found if isinstance(found, Path) else found.local_path()

    def input_target(self, name: str, of: type[PipelineTask] | str | None = None):
        """The input file's path, or the upstream output's target, called `name`."""
        files = self.input_files()
        if name in files and of is None:
            return self.context.input_dir() / files[name].filename
        makers = self.makers_of(name)
        if of is not None:
            family = of if isinstance(of, str) else of.get_task_family()
            makers = [task for task in makers if task.task_family == family]
        if not makers:
            known = sorted({*files, *(o for t in self.upstream() for o in t.outputs)})
            raise KeyError(f"{self.task_family} has no input '{name}'; it has {known}")
        if len(makers) > 1:
            raise AmbiguousInput(ambiguity(self.task_family, name, makers))
        return makers[0].output()[name]

    def makers_of(self, name: str) -> list[PipelineTask]:
        """The upstream tasks that make an output called `name`."""
        return [task for task in self.upstream() if name in task.outputs]

    def load(self, name: str, of: type[PipelineTask] | str | None = None) -> Any:
        """Read an input by name: a table (Parquet or CSV) as a DataFrame, a model as pyfunc,
        JSON as Python values. An upstream output is checked as it is read against the
        manifest of the task that made it (as its run vouches for it now), so what is read
        is what was verified; a model loads through the project's own loader, which runs no
        code from the artifact (`loader.load_model`)."""
        found = self.input_target(name, of)
        if isinstance(found, Path):  # an input file, in its encoding
            return formats.read(found, self.input_files()[name].encoding)
        return models.read_verified(found, name)

    def read_output(self, name: str) -> Any:
        """Read one of this task's own finished outputs (wherever this run took them from)."""
        return models.read_verified(self.output()[name], name)

    def add_to_card(self, title: str, content: Any) -> None:
        """Add a section to the task's card in the run report: a DataFrame or a text."""
        self._running().card_sections.append((title, content))

    # writing ----------------------------------------------------------------------------------
    def output_path(self, name: str) -> Path:
        """Where to write output `name` yourself; it counts only once `run()` returns."""
        if name not in self.outputs:
            raise KeyError(
                f"{self.task_family}.outputs has no '{name}'; it has {sorted(self.outputs)}"
            )
        return self._running().writer.path(self.outputs[name])

    def save(self, name: str, value: Any) -> None:
        """Write a DataFrame as Parquet or CSV, or JSON-able values, as the file name says."""
        path = self.output_path(name)
        self._running().writer.written[path] = formats.write(path, value)
        if formats.is_table(path):
            self._running().profiles[name] = cards.profile(value)  # while it is in memory

    def save_model(self, model: Any, example: Any, name: str = "model") -> None:
        """Save a scikit-learn model in MLflow's format, with its signature and an input
        example (skops: loading it runs no arbitrary code)."""
        formats.write_sklearn_model(model, example, self.output_path(name))
        attempt = self._running()
        if name not in attempt.models:  # the MLflow 3 Logged Model it becomes on commit
            safe = Redactor.from_environment(self.context.config)  # as the run's params are
            params = safe.mapping(self.significant_params())
            attempt.models[name] = models.create(self.run_id, self.task_family, name, params)

    # tracking ---------------------------------------------------------------------------------
    def log_metrics(self, **metrics: float) -> None:
        """Record metrics on the run; sent in one request when the task ends."""
        self._running().metrics.update({k: float(v) for k, v in metrics.items()})

    def log_params(self, **params: Any) -> None:
        """Record extra params on the run (task parameters are logged by the runner)."""
        extra = {f"{self.task_family}.{k}": str(v) for k, v in params.items()}
        self._running().params.update(extra)

    @contextmanager
    def fluent_run(self) -> Iterator[None]:
        """Make this task's run the fluent active run, for APIs that only log that way
        (autolog, `mlflow.models.evaluate`). The run stays RUNNING afterwards."""
        import mlflow

        mlflow.start_run(run_id=self.run_id)
        try:
            yield
        finally:
            mlflow.end_run()
            client().update_run(self.run_id, status="RUNNING")

    def significant_params(self) -> dict[str, str]:
        """The task's parameters as strings, without the run id (and without secrets)."""
        return {k: v for k, v in self.to_str_params(only_significant=True).items() if k != "run_id"}

    def _running(self) -> Attempt:
        if self._attempt is None:
            raise RuntimeError(f"{self.task_family}: outputs and metrics belong inside run()")
        return self._attempt


@cache
def _run_values(cls: type[PipelineTask], run_id: str) -> dict[str, Any]:
    """The arguments a run's context gives a task class ({} for a run without a context); a
    secret is resolved from its `${VAR}` reference in this process's environment, and one
    the context only masks is left to its default."""
    context = find(run_id)
    if context is None:
        return {}
    params = dict(cls.get_params())
    found: dict[str, Any] = {}
    for name, value in context.config.get(cls.get_task_family(), {}).items():
        if name not in params or name == "run_id":
            continue
        if is_secret_key(name):
            reference = ENV_REFERENCE.match(value) if isinstance(value, str) else None
            if reference is None:
                continue
            value = os.environ[reference["name"]]  # present: checked as the run was attached
        found[name] = argument(params[name], value)
    return found


def ambiguity(family: str, name: str, makers: list[PipelineTask]) -> str:
    both = " and ".join(t.task_family for t in makers)
    return (
        f"{family} reads '{name}', which {both} both make: say which, e.g. "
        f"self.load({name!r}, of={makers[0].task_family})"
    )


__all__ = ["InputFile", "PipelineTask", "requires"]
