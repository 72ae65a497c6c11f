"""The base class of every pipeline task: paths, formats, atomic outputs and tracking.

A user task says what it needs (`@requires`), what it makes (`outputs`) and how (`run`); it
reads with `load()` and writes with `save()` / `save_model()` and never sees a path. Every
task talks to MLflow through `MlflowClient` with the run id it was given, never through the
fluent "active run", so it behaves the same in the runner's process, in Luigi worker
processes and on other machines attached to a central scheduler.
"""

from __future__ import annotations

import functools
import platform
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import luigi
from luigi.configuration import get_config

from luigiflow import cards, report
from luigiflow.targets import ArtifactTarget, TaskFolder, TaskWriter, client

STATUS_TAG = "luigiflow.task.{}.status"
DURATION_TAG = "luigiflow.task.{}.duration_s"
USER_CODE_TAG = "luigiflow.task.{}.user_code_s"
REUSED_TAG = "luigiflow.task.{}.reused_from"
REASON_TAG = "luigiflow.task.{}.why_run"


@dataclass(frozen=True)
class InputFile:
    """An external file a task reads from the input folder, with the columns it must have."""

    filename: str
    columns: tuple[str, ...] = ()


def requires(*upstream: type[PipelineTask]) -> Callable[[type[PipelineTask]], type[PipelineTask]]:
    """Declare the tasks whose outputs a task reads.

    Unlike `luigi.util.requires`, the upstream's parameters are not copied onto the task: each
    task keeps its own `[Section]` in luigi.toml. Only the run id is passed along.
    """

    def decorate(cls: type[PipelineTask]) -> type[PipelineTask]:
        def requires(self: PipelineTask) -> dict[str, PipelineTask]:
            return {task.get_task_family(): task(run_id=self.run_id) for task in upstream}

        cls.requires = requires
        return cls

    return decorate


class PipelineTask(luigi.Task):
    """Subclass it, declare `outputs` and write `run()`; see `src/tasks/` for examples."""

    run_id = luigi.Parameter(description="the MLflow run this task logs into (set by the runner)")

    #: output name -> file (or folder, for a model) inside the task's artifact folder
    outputs: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _tracked(cls.__dict__["run"])

    # what the task reads and makes -----------------------------------------------------------
    def input_files(self) -> dict[str, InputFile]:
        """External files read from `[PathConfig] input`; checked before the run starts."""
        return {}

    def validate(self) -> dict[str, str]:
        """Check parameter values before the run starts: {parameter: what is wrong}. Asked only
        of tasks that will run (a reused task's values already made its outputs)."""
        return {}

    def external_state(self) -> dict[str, str]:
        """What the task reads from outside the pipeline besides input files (a registered
        model, say), described so that a change invalidates its cached outputs."""
        return {}

    def conclusions(self) -> dict[str, str]:
        """What the run should say about this task's outputs (a verdict, a registration):
        tagged `luigiflow.<key>` on the run and printed in the summary, even when reused."""
        return {}

    def upstream(self) -> list[PipelineTask]:
        """The tasks this one requires, whatever shape `requires()` returns them in."""
        return list(luigi.task.flatten(self.requires()))

    def reuse_source(self) -> str | None:
        """`[PathConfig] <TaskName>`: an earlier output to use instead of running this task."""
        return get_config().get("PathConfig", self.task_family, None)

    def folder(self) -> TaskFolder:
        source = self.reuse_source()
        return (
            TaskFolder.from_source(source) if source else TaskFolder(self.run_id, self.task_family)
        )

    def output(self) -> dict[str, ArtifactTarget]:
        folder = self.folder()
        return {name: ArtifactTarget(folder, filename) for name, filename in self.outputs.items()}

    # reading ----------------------------------------------------------------------------------
    def input_path(self, name: str) -> Path:
        """A local path to an external input file (`input_files`) or an upstream output."""
        files = self.input_files()
        if name in files:
            return Path(get_config().get("PathConfig", "input")) / files[name].filename
        targets = {
            output: target
            for outputs in self.input().values()
            for output, target in outputs.items()
        }
        if name not in targets:
            raise KeyError(
                f"{self.task_family} has no input '{name}'; it has {sorted({*files, *targets})}"
            )
        return targets[name].local_path()

    def load(self, name: str) -> Any:
        """Read an input by name: a table (Parquet or CSV) as a DataFrame, a model as pyfunc,
        JSON as Python values."""
        return _read(self.input_path(name))

    def read_output(self, name: str) -> Any:
        """Read one of this task's own finished outputs (wherever this run took them from)."""
        return _read(self.output()[name].local_path())

    def add_to_card(self, title: str, content: Any) -> None:
        """Add a section to the task's card in the run report: a DataFrame or a text."""
        self._card_sections.append((title, content))

    # writing ----------------------------------------------------------------------------------
    def output_path(self, name: str) -> Path:
        """Where to write output `name` yourself; it counts only once `run()` returns."""
        if name not in self.outputs:
            raise KeyError(
                f"{self.task_family}.outputs has no '{name}'; it has {sorted(self.outputs)}"
            )
        return self._writer.path(self.outputs[name])

    def save(self, name: str, table: Any) -> None:
        """Write a DataFrame as Parquet or CSV, or JSON-able values, as the file name says."""
        path = self.output_path(name)
        tmp = path.with_name(f".{path.name}.tmp")
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        elif path.suffix == ".json":
            import json

            tmp.write_text(json.dumps(table, indent=2, default=str))
        else:
            raise ValueError(f"{path.name}: no writer for '{path.suffix}' files; use output_path()")
        tmp.replace(path)
        if path.suffix in (".parquet", ".csv"):
            self._profiles[name] = cards.profile(table)  # while the table is in memory

    def save_model(self, model: Any, example: Any, name: str = "model") -> None:
        """Save a scikit-learn model in MLflow's format, with its signature and an input example.

        The format is skops, which loads without running arbitrary code (a pickle from a shared
        tracking server could run anything); it trusts exactly the types this model is made of.
        """
        import mlflow.sklearn
        import skops.io
        from mlflow.models import infer_signature

        signature = infer_signature(example, model.predict(example))
        mlflow.sklearn.save_model(
            model,
            str(self.output_path(name)),
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),  # inferring them costs seconds
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )

    # tracking ---------------------------------------------------------------------------------
    def log_metrics(self, **metrics: float) -> None:
        """Record metrics on the run; sent in one request when the task ends."""
        self._metrics.update({k: float(v) for k, v in metrics.items()})

    def log_params(self, **params: Any) -> None:
        """Record extra params on the run (task parameters are logged by the runner)."""
        self._params.update({f"{self.task_family}.{k}": str(v) for k, v in params.items()})

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
        """The task's parameters as strings, without the run id."""
        return {k: v for k, v in self.to_str_params(only_significant=True).items() if k != "run_id"}


def _tracked(user_run: Callable[[PipelineTask], None]) -> Callable[[PipelineTask], None]:
    """Wrap a task's `run`: fresh output folder, status tags, manifest last, failure recorded."""

    @functools.wraps(user_run)
    def run(self: PipelineTask) -> None:
        family, run_id = self.task_family, self.run_id
        started, began = datetime.now(UTC), time.monotonic()
        self._metrics, self._params = {}, {}
        self._profiles, self._card_sections = {}, []
        self._writer = TaskWriter(TaskFolder(run_id, family))
        self._writer.begin()
        client().set_tag(run_id, STATUS_TAG.format(family), "RUNNING")
        report.task_started(family)
        status, user_seconds = "FAILED", 0.0
        try:
            user_began = time.monotonic()
            user_run(self)
            user_seconds = time.monotonic() - user_began
            cards.write_card(self, self._writer.path(cards.CARD))
            self._writer.commit(_manifest(self, started, time.monotonic() - began, user_seconds))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            text = traceback.format_exc()
            client().log_text(run_id, text, f"errors/{family}.txt")
            report.task_failed(family, text)
            raise
        finally:
            seconds = time.monotonic() - began
            _log_task_end(self, status, seconds, user_seconds)
        report.task_finished(family, seconds)

    return run


def _log_task_end(task: PipelineTask, status: str, seconds: float, user_seconds: float) -> None:
    """One request for everything the task recorded: metrics, params, status and timings, and
    (once it finished) the fingerprint by which later runs find its outputs."""
    from mlflow.entities import Metric, Param, RunTag

    from luigiflow.caching import FINGERPRINT_TAG, current

    now = int(time.time() * 1000)
    family = task.task_family
    done = (
        [RunTag(FINGERPRINT_TAG.format(family), current().of(task).digest)]
        if status == "FINISHED"
        else []
    )
    client().log_batch(
        task.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in task._metrics.items()],
        params=[Param(k, v) for k, v in task._params.items()],
        tags=[
            RunTag(STATUS_TAG.format(task.task_family), status),
            RunTag(DURATION_TAG.format(task.task_family), f"{seconds:.3f}"),
            RunTag(USER_CODE_TAG.format(task.task_family), f"{user_seconds:.3f}"),
            *done,
        ],
    )


def _manifest(task: PipelineTask, started: datetime, seconds: float, user_seconds: float) -> dict:
    from luigiflow.caching import current

    return {
        "task": task.task_family,
        "fingerprint": current().of(task).as_dict(),
        "run_id": task.run_id,
        "params": task.significant_params(),
        "outputs": dict(task.outputs),
        "upstream": {dep.task_family: repr(dep.folder()) for dep in task.upstream()},
        "started": started.isoformat(),
        "duration_s": round(seconds, 3),
        "user_code_s": round(user_seconds, 3),
        "versions": library_versions(),
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (read without importing them)."""
    from importlib.metadata import version

    names = ("luigi", "mlflow", "scikit-learn", "pandas", "pyarrow")
    return {"python": platform.python_version(), **{name: version(name) for name in names}}


@functools.cache
def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in ("mlflow", "scikit-learn", "pandas", "numpy", "skops")
    ]


def _read(path: Path) -> Any:
    """A model folder as pyfunc, a table as a DataFrame, JSON as Python values."""
    if path.is_dir():
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(path))
    if path.suffix == ".json":
        import json

        return json.loads(path.read_text())
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"{path.name}: no reader for '{path.suffix}' files; use input_path()")


__all__ = ["InputFile", "PipelineTask", "requires"]
