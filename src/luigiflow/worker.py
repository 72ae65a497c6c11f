"""Work on a run that exists, knowing only its id and the tracking URI.

`attach` rebuilds everything a process needs from the run's context in the store: it installs
the run's config for Luigi (secrets resolved from this process's own environment) and checks
that this checkout's code is the code the run was planned with. `build` then lets Luigi run
whatever of the run is pending. The runner takes this path for its own build, right after it
creates the run, so every run exercises it; a process started elsewhere with the run id takes
the same one.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from luigiflow import caching, logs, records
from luigiflow.config import Config, ConfigError, parse_config
from luigiflow.context import RUN, NoContext, RunContext, load
from luigiflow.names import CONTEXT_ARTIFACT, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from luigiflow.redact import Redactor
from luigiflow.report import follow
from luigiflow.settings import load_settings
from luigiflow.task import PipelineTask


def attach(
    run_id: str, project_root: Path, task_classes: Mapping[str, type[PipelineTask]]
) -> tuple[RunContext, Config]:
    """The run's context, and its config installed for Luigi in this process; ConfigError
    when a secret's variable is missing here or this code differs from the run's."""
    context = load(run_id)
    source = f"run {run_id} {CONTEXT_ARTIFACT}"
    missing = [family for family in context.tasks if family not in task_classes]
    if missing:
        raise ConfigError(source, f"this checkout has no task {', '.join(missing)}")
    config = parse_config(context.config, source, project_root, task_classes)
    differences = caching.code_differences(context, task_classes)
    if differences:
        raise ConfigError(source, "this checkout's code differs from the run's: " + differences)
    _check_inputs(run_id, context, task_classes, source)
    return context, config


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

    With a central scheduler other processes may be working on the same run, and Luigi's
    build returns as soon as nothing is left for this process right now, even while a task
    runs elsewhere. So it is repeated until the run's task is complete, a task failed (its
    record says so, wherever it ran), or the run ended; a task whose worker died is handed
    out again by the scheduler and taken by whichever process asks next.
    """
    root = task_classes[context.root](run_id=run_id)
    if not scheduler_url:
        return _build_once(root, workers, "") == "done"
    _poll_often()
    began = records.now()
    while True:
        outcome = _build_once(root, workers, scheduler_url)
        if outcome != "waiting" or root.complete():
            return outcome == "done" or root.complete()
        if _failed_since(began, run_id, context) or not _running(run_id):
            return False
        time.sleep(WAIT_S)


WAIT_S = 2.0  # between two looks at a run whose remaining tasks run in other processes
# Luigi's worker defaults suit nightly batches (up to 5 s of jitter per poll of the scheduler,
# a minute of retries when it is unreachable); a person waits on these. luigi.toml may say
# otherwise in [worker] and [core].
CENTRAL_DEFAULTS = {
    ("worker", "wait_interval"): "1",
    ("worker", "wait_jitter"): "0.5",
    ("core", "rpc-retry-attempts"): "3",
    ("core", "rpc-retry-wait"): "5",
}


def check_scheduler(url: str) -> None:
    """luigid must answer before a run is created on it or joined (Luigi itself would retry
    for a while, then fail in the middle of the build)."""
    import json
    import urllib.parse
    import urllib.request

    query = urllib.parse.quote(json.dumps({"status": "RUNNING", "search": "luigiflow-check"}))
    try:
        with urllib.request.urlopen(f"{url}/api/task_list?data={query}", timeout=10) as response:
            json.load(response)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError("scheduler", f"luigid at {url} does not answer ({reason})") from None


def _poll_often() -> None:
    import luigi.configuration

    config = luigi.configuration.get_config()
    for (section, key), value in CENTRAL_DEFAULTS.items():
        if not config.has_option(section, key):
            config.set(section, key, value)


def _build_once(root: PipelineTask, workers: int, scheduler_url: str) -> str:
    """One Luigi build: "done", "failed" (a task of this process failed) or "waiting"."""
    import luigi

    result = luigi.build(
        [root],
        detailed_summary=True,
        local_scheduler=not scheduler_url,
        scheduler_url=scheduler_url,
        workers=workers,
    )
    logging.info("%s", result.summary_text)
    if result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY") and root.complete():
        return "done"
    if result.status.name in ("FAILED", "FAILED_AND_SCHEDULING_FAILED", "SCHEDULING_FAILED"):
        return "failed"
    return "waiting" if scheduler_url else "failed"


def _failed_since(began: str, run_id: str, context: RunContext) -> bool:
    """A task of the run failed in another process since this build began (its record says
    so; a resumed run's earlier failures do not count): the run will fail."""
    found = records.read_all(run_id, list(context.decided(RUN)))
    return any(r.status == records.FAILED and r.started >= began for r in found.values())


def _running(run_id: str) -> bool:
    from luigiflow.targets import client

    return client().get_run(run_id).info.status == "RUNNING"


def main(
    project_root: Path,
    task_modules: Sequence[str],
    run_id: str,
    workers: int = 1,
    scheduler_url: str | None = None,
) -> int:
    """Build what is pending in an existing run, in this process, knowing only the run id and
    the tracking URI (from the environment or `.env`): the path a resumed or joined worker
    takes. The run's lifecycle stays with whoever created it. Exit 0 when the run's task is
    complete, 1 when a task failed, 2 when this process cannot work on the run."""
    settings = load_settings(project_root)
    _, handlers = logs.start_logging(settings.project_root, verbose=False)
    from mlflow.exceptions import MlflowException

    logs.quiet_mlflow_logger()
    logs.take_over_luigi_logging()
    task_classes = load_task_classes(task_modules)
    try:
        context, config = attach(run_id, settings.project_root, task_classes)
    except (ConfigError, NoContext, MlflowException) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.redact_logs(handlers, Redactor.from_environment(config.sections))
    built = build(run_id, context, task_classes, workers, scheduler_url)
    return EXIT_OK if built else EXIT_FAILED


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
