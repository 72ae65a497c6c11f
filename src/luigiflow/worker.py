"""Work on a run that exists, knowing only its id and the tracking URI.

`attach` finds everything a process needs in the run's context in the store (the tasks take
their values from it, secrets from this process's own environment) and checks that this
checkout's code and input files are those the run was planned with. `build` then lets Luigi run
whatever of the run is pending. The runner takes this path for its own build, right after it
creates the run, so every run exercises it; a process started elsewhere with the run id takes
the same one, and so does `join` (`--join RUN_ID`), a worker that luigid hands a running run's
tasks to.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from luigiflow import caching, formats, scheduler, sourcecode, store
from luigiflow import redact as logs
from luigiflow.config import ConfigError, check_secrets
from luigiflow.names import (
    CONTEXT_ARTIFACT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    SWEEP_TAG,
)
from luigiflow.redact import Redactor, redact_uri
from luigiflow.runstate import DEFERRED, RUN, NoContext, RunContext, load
from luigiflow.settings import Settings, load_settings
from luigiflow.task import PipelineTask
from luigiflow.terminal import follow
from luigiflow.values import install_luigi_sections, luigi_sections

if TYPE_CHECKING:
    from mlflow import MlflowClient

# What keeps a process from working on a run (exit 2): a bad command line or config, a store
# it cannot use, a run without a context.
USAGE_ERRORS = (ConfigError, store.StoreMoved, store.StoreUnavailable, MlflowException, NoContext)


def attach(run_id: str, task_classes: Mapping[str, type[PipelineTask]]) -> RunContext:
    """The run's context, once this process is found fit to work on the run: ConfigError
    when a secret's variable is missing here, or this code or these input files differ from
    the run's. Luigi's own sections of the run's config are installed for Luigi."""
    context = load(run_id)
    source = f"run {run_id} {CONTEXT_ARTIFACT}"
    missing = [family for family in context.tasks if family not in task_classes]
    if missing:
        raise ConfigError(source, f"this checkout has no task {', '.join(missing)}")
    check_secrets(context.config, source)
    differences = caching.code_differences(context, task_classes)
    if differences:
        raise ConfigError(source, "this checkout's code differs from the run's: " + differences)
    _check_inputs(run_id, context, task_classes, source)
    install_luigi_sections(luigi_sections(context.config))
    return context


def _check_inputs(
    run_id: str, context: RunContext, task_classes: Mapping[str, type], source: str
) -> None:
    """The input files here must be those the run was planned with (a worker on another
    machine brings its own copy): the digests in the tasks' fingerprints say."""
    for family, entry in context.decided(RUN).items():
        recorded = entry.fingerprint.get("inputs", {})
        for input_file in task_classes[family](run_id=run_id).input_files().values():
            filename, digest = input_file.filename, recorded.get(input_file.filename)
            path = context.input_dir() / filename
            if not path.is_file():
                raise ConfigError(source, f"{path} is missing here; the run reads it")
            if caching.file_digest(path) != digest:
                raise ConfigError(source, f"{path} differs from the file the run was planned with")


def build(
    run_id: str,
    context: RunContext,
    task_classes: Mapping[str, type[PipelineTask]],
    workers: int = 1,
    scheduler_url: str | None = None,
) -> bool:
    """Let Luigi build the run's requested task and whatever it needs that is not complete.
    True when it succeeded (Luigi's own result is always truthy, so it is read in detail).
    With a central scheduler, other processes may work on the run too: see `scheduler`."""
    root = task_classes[context.root](run_id=run_id)
    if not scheduler_url:
        return _build_once(root, workers, "") == "done"
    return scheduler.build_in_rounds(
        scheduler_url,
        run_id,
        context,
        lambda: _build_once(root, workers, scheduler_url),
        root.complete,
    )


def build_sweep(
    run_ids: Sequence[str],
    task_classes: Mapping[str, type[PipelineTask]],
    workers: int = 1,
    scheduler_url: str | None = None,
) -> dict[str, bool]:
    """Build the children of a sweep together, in one Luigi build: a task they share runs
    once, and with several workers the children run side by side. A child that fails does
    not stop the others. Whether each child's task is complete, by run id."""
    wanted = {run_id: _sweep_roots(run_id, task_classes) for run_id in run_ids}

    def build_once(runs: Sequence[str]) -> str:
        return _build_once([task for r in runs for task in wanted[r]], workers, scheduler_url or "")

    def complete(run_id: str) -> bool:
        return all(task.complete() for task in wanted[run_id])

    if scheduler_url:  # other processes may join a child: see `scheduler`
        contexts = {run_id: load(run_id) for run_id in run_ids}
        return scheduler.build_runs_in_rounds(scheduler_url, contexts, build_once, complete)
    build_once(run_ids)
    return {run_id: complete(run_id) for run_id in run_ids}


def _sweep_roots(run_id: str, task_classes: Mapping[str, type[PipelineTask]]) -> list:
    """A child's task, and what its deferred tasks need: those count as complete in the
    child, so Luigi would not look below them (the Evaluator below the Register)."""
    context = load(run_id)
    roots = [task_classes[context.root](run_id=context.made_by(context.root, run_id))]
    for family in context.decided(DEFERRED):
        roots += task_classes[family](run_id=run_id).upstream()
    return roots


def _build_once(roots: PipelineTask | list[PipelineTask], workers: int, scheduler_url: str) -> str:
    """One Luigi build: "done", "failed" (a task of this process failed), or "waiting" (with
    a central scheduler: what is left runs elsewhere, or is not ready yet)."""
    import luigi

    roots = roots if isinstance(roots, list) else [roots]
    if workers > 1:
        preload(roots)
    with _threads_per_task(workers):
        result = luigi.build(
            roots,
            detailed_summary=True,
            local_scheduler=not scheduler_url,
            scheduler_url=scheduler_url,
            workers=workers,
        )
    logging.debug("%s", result.summary_text)
    if result.status.name in ("FAILED", "FAILED_AND_SCHEDULING_FAILED", "SCHEDULING_FAILED"):
        logging.info("%s", result.summary_text)
        return "failed"  # asking the store whether the roots are complete would add nothing
    if result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY") and all(
        root.complete() for root in roots
    ):
        logging.info("%s", result.summary_text)
        return "done"
    return "waiting" if scheduler_url else "failed"


def _threads_per_task(workers: int):
    """With several worker processes, each task's numerical libraries (BLAS, OpenMP) get their
    share of the cores, not all of them each: threads that outnumber the cores wait on each
    other (measured: a sweep of 4 on 2 cores took 15.0 s with 2 threads per task, 12.5 s with
    one). Set before Luigi forks, so every task process inherits it."""
    if workers <= 1:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, (os.cpu_count() or 1) // workers))


def preload(roots: list[PipelineTask]) -> None:
    """Import, before Luigi forks a process per task, the libraries the tasks import when they
    run: each forked process then starts with them loaded instead of paying for them again."""
    names: set[str] = set()
    for cls in {type(task) for task in _graph(roots)}:
        names |= sourcecode.imported_libraries(cls, caching.source_root(cls))
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except Exception:  # an optional import the task guards itself
            logging.debug("could not preload %s", name, exc_info=True)
    formats.warm_up()


def _graph(roots: list[PipelineTask]) -> list[PipelineTask]:
    found, todo = {}, list(roots)
    while todo:
        task = todo.pop()
        if task.task_id not in found:
            found[task.task_id] = task
            todo.extend(task.upstream())
    return list(found.values())


def main(
    project_root: Path,
    task_modules: Sequence[str],
    run_id: str,
    workers: int = 1,
    scheduler_url: str | None = None,
) -> int:
    """Build what is pending in an existing run, in this process, knowing only the run id and
    the tracking URI (from the environment or `.env`), with none of the runner's checks of
    the run's state (`--resume` adds those, in `lifecycle`, and `--join`, in `join`). The run's
    lifecycle stays with whoever created it. Exit 0 when the run's task is complete, 1 when a
    task failed, 2 when this process cannot work on the run."""
    settings = load_settings(project_root)
    _, handlers = logs.start_logging(settings.project_root, verbose=False)
    logs.quiet_mlflow_logger()
    logs.take_over_luigi_logging()
    task_classes = load_task_classes(task_modules)
    try:
        context = attach(run_id, task_classes)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.redact_logs(handlers, Redactor.from_environment(context.config))
    built = build(run_id, context, task_classes, workers, scheduler_url)
    return EXIT_OK if built else EXIT_FAILED


def join(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """--join RUN_ID: run whatever tasks of a RUNNING run the run's luigid hands this process,
    into the same MLflow run. The invocation that created the run still owns it: it waits for
    the pipeline and ends the run; a joined worker exits once no task of the run is left, and
    leaves its log in the run (`logs/workers/<host>-<pid>/`) beside the creator's."""
    run_id = args.join
    try:
        if not settings.scheduler_url:
            raise ConfigError(
                "--join",
                "needs the run's luigid: --profile shared, --scheduler-url or "
                "LUIGIFLOW_SCHEDULER_URL",
            )
        scheduler.check(settings.scheduler_url)
        client = store.open_store(settings)
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            raise ConfigError(
                "--join", f"run {run_id} is {run.info.status}: only a RUNNING run is joined"
            )
        if store.local_path(store.run_artifact_uri(run_id)) is not None:
            raise ConfigError(
                "--join",
                f"run {run_id} keeps its outputs in a folder of the embedded store; workers "
                "share a run through a tracking server: start runs with --profile shared",
            )
        # A sweep's parent is joined by joining its children that are still running.
        joined = _sweep_children(client, run) if SWEEP_TAG in run.data.tags else [run_id]
        for child in joined:
            scheduler.check_joinable(child, load(child).scheduler, settings.scheduler_url)
            context = attach(child, task_classes)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.redact_logs(handlers, Redactor.from_environment(context.config))
    logs.take_over_luigi_logging()
    what = context.root if joined == [run_id] else f"a sweep of {len(joined)} runs"
    print(f"Joined run {run_id}: {what} through {redact_uri(settings.scheduler_url)}")
    try:
        if joined == [run_id]:
            built = build(run_id, context, task_classes, args.workers, settings.scheduler_url)
        else:
            finished = build_sweep(joined, task_classes, args.workers, settings.scheduler_url)
            built = all(finished.values())
    except KeyboardInterrupt:  # the task it ran goes back to the scheduler, for another worker
        print(f"Left run {run_id}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # luigid or the store gone for good: one line, details in the log
        logging.exception("joined worker failed")
        print(f"Left run {run_id}: {error}", file=sys.stderr)
        return EXIT_FAILED
    _upload_worker_log(run_id, log_path)
    print(f"Left run {run_id}: " + ("no task left" if built else "the pipeline did not finish"))
    return EXIT_OK if built else EXIT_FAILED


def _upload_worker_log(run_id: str, log_path: Path) -> None:
    """A joined worker's log, into the run: its tasks' details are where the run is. Not
    after an interruption or a store gone for good, where waiting on the upload would only
    hold up the exit."""
    logs.flush()
    folder = f"logs/workers/{socket.gethostname()}-{os.getpid()}"
    try:
        store.client().log_artifact(run_id, str(log_path), folder)
    except Exception as error:  # the store is gone: the log stays on this machine
        print(f"Could not upload the log ({error}); it is at {log_path}", file=sys.stderr)


def _sweep_children(client: MlflowClient, parent) -> list[str]:
    """The RUNNING children of a sweep's parent (those still being built)."""
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'RUNNING'",
    )
    if not children:
        raise ConfigError("--join", f"run {parent.info.run_id} is a sweep with no child running")
    return [child.info.run_id for child in children]


def load_task_classes(task_modules: Sequence[str]) -> dict[str, type]:
    for module in task_modules:
        importlib.import_module(module)
    follow(PipelineTask)  # a line per task on the terminal, from whichever process runs it
    return {cls.get_task_family(): cls for cls in _subclasses(PipelineTask)}


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
