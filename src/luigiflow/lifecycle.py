"""A run's life, a plain run's and a sweep's alike, written once (`live`): opened in its
experiment, built with a heartbeat and guarded against Ctrl-C and SIGTERM, then ended (records
settled, conclusions and report, the log, the status) by steps that nothing may interrupt, with
an exit status that matches the run's.

Exit status: 0 when the pipeline succeeded (run FINISHED), 1 when a task failed (FAILED), 2 for
a bad command line, config or store (no run is created or touched), 3 with
`--require-validated` when the model was REJECTED (the run is still FINISHED), 130 on Ctrl-C and
143 on SIGTERM (KILLED). Luigi's own exit codes are not used: it reports success even when a
task fails.
"""

from __future__ import annotations

import functools
import logging
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlflow import MlflowClient

from luigiflow import redact as logs
from luigiflow import runstate, scheduler, store, tracking, worker
from luigiflow.config import Config, ConfigError
from luigiflow.names import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    FROM_RUN_TAG,
    VALIDATED,
    VALIDATION,
)
from luigiflow.plan import Plan
from luigiflow.redact import Redactor
from luigiflow.report import conclude, outcomes, summary
from luigiflow.runstate import SHARED
from luigiflow.settings import Settings
from luigiflow.store import Ending
from luigiflow.terminal import shown
from luigiflow.worker import USAGE_ERRORS

STARTED = time.monotonic()  # the summary reports the whole invocation, imports included


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: Luigi lets that through instead of calling it a task failure."""


class Runs(Protocol):
    """What `live` opens, builds and ends: one run, or a sweep's parent and children."""

    def open(self) -> None: ...  # create the runs (or reopen the run)

    def opened(self) -> list[str]: ...  # the runs created so far, the first one first

    def build(self) -> bool: ...  # True when the build succeeded

    def end(self, status: str, code: int, ending: Ending) -> int: ...  # the exit code


def live(runs: Runs, client, redactor: Redactor) -> int:
    """Open the runs, build them guarded and with a heartbeat, then end every run opened, by
    one `Ending` (one deadline) whatever happened; the heartbeat stops once they are ended."""
    heartbeat = None

    def open_and_build() -> bool:
        nonlocal heartbeat
        runs.open()
        heartbeat = tracking.Heartbeat(*runs.opened())
        heartbeat.start()
        return runs.build()

    ending = Ending()
    status, code = guarded(open_and_build, client, redactor, runs.opened, ending)
    try:
        return runs.end(status, code, ending) if runs.opened() else code
    finally:
        if heartbeat is not None:
            heartbeat.stop()


@dataclass
class PlainRun:
    """One run of the pipeline through `live`: `begin` creates it (or reopens it) and returns
    its id and page; it is built through the worker path."""

    args: Any
    settings: Settings
    client: Any
    plan: Plan
    log_path: Path
    task_classes: Any
    begin: Callable[[], tuple[str, str]]
    earlier: frozenset = field(default_factory=frozenset)  # tasks an earlier attempt finished
    run_id: str = ""
    url: str = ""

    def open(self) -> None:
        self.run_id, self.url = self.begin()

    def opened(self) -> list[str]:
        return [self.run_id] if self.run_id else []

    def build(self) -> bool:
        """Build the run through the worker path; when it failed with other processes on it,
        let what they are running finish before the run is ended."""
        settings, run_id, task_classes = self.settings, self.run_id, self.task_classes
        context = worker.attach(run_id, task_classes)
        built = worker.build(
            run_id, context, task_classes, self.args.workers, settings.scheduler_url
        )
        if not built and settings.scheduler_url:
            scheduler.wait_for_others(settings.scheduler_url, run_id)
        return built

    def end(self, status: str, code: int, ending: Ending) -> int:
        found = finish(
            self.client, self.run_id, status, self.plan, self.log_path, self.url, self.earlier,
            ending=ending,
        )  # fmt: skip
        rejected = self.args.require_validated and found.get(VALIDATION) != VALIDATED
        return exit_code(code, found, rejected)


def exit_code(code: int, found: dict, rejected: bool) -> int:
    """The exit code once the run is ended (`found`: what `finish` concluded): a store that
    failed on the way fails a run that succeeded, and with --require-validated a model
    `rejected` gives 3."""
    if found.get("problems"):
        return EXIT_FAILED if code == EXIT_OK else code
    if code == EXIT_OK and rejected:
        return EXIT_REJECTED
    return code


def new_run(
    args,
    settings: Settings,
    client,
    plan: Plan,
    config: Config,
    experiment,
    redactor,
    log_path: Path,
    task_classes,
    adopted: str | None,
) -> int:
    """Create the run (or adopt the one `mlflow run` started) in `experiment`, build, end it."""

    def begin() -> tuple[str, str]:
        extra = {FROM_RUN_TAG: args.from_run} if args.from_run else {}
        config.run["tags"] = {**dict(config.run.get("tags") or {}), **extra}
        run_id = tracking.start_run(
            client, experiment.experiment_id, config, plan.context, redactor,
            settings.project_root, sys.argv, adopted,
        )  # fmt: skip
        outputs = {task.task_family: task.outputs for task in plan.tasks}
        tracking.prepare(
            client, run_id, plan.context, outputs, settings.tracking_uri, settings.ui_url
        )
        print(f"Run {run_id} started: {config.task} in experiment '{experiment.name}'", flush=True)
        url = tracking.run_url(
            settings.tracking_uri, experiment.experiment_id, run_id, settings.ui_url
        )
        return run_id, url

    run = PlainRun(args, settings, client, plan, log_path, task_classes, begin)
    return live(run, client, redactor)


def resume(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """--resume RUN_ID: the same run, with its own config and code, finishing what is left."""
    run_id = args.resume
    try:
        client = store.open_store(settings)
        problem = tracking.resumable(client, run_id)
        if problem:
            raise ConfigError("--resume", problem)
        context = worker.attach(run_id, task_classes)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    redactor = Redactor.from_environment(context.config)
    logs.redact_logs(handlers, redactor)
    plan = Plan([task_classes[family](run_id=run_id) for family in context.tasks], context)
    done = runstate.read_records(run_id, list(context.tasks))
    earlier = frozenset(f for f, record in done.items() if record.status == runstate.FINISHED)

    def begin() -> tuple[str, str]:
        tracking.reopen(client, run_id, sys.argv, redactor)
        kept = ", ".join(sorted(earlier)) or "none"
        print(f"Run {run_id} resumed: {context.root} (kept from the earlier attempt: {kept})")
        experiment_id = client.get_run(run_id).info.experiment_id
        return run_id, tracking.run_url(
            settings.tracking_uri, experiment_id, run_id, settings.ui_url
        )

    run = PlainRun(args, settings, client, plan, log_path, task_classes, begin, earlier)
    return live(run, client, redactor)


def open_experiment(client: MlflowClient, settings: Settings, config: Config, adopted: str | None):
    """The run's experiment (created if need be); runs there left RUNNING by a dead runner are
    marked KILLED first."""
    with store.store_lock(settings):
        if adopted:  # `mlflow run` started the run, in the experiment it was given
            experiment = client.get_experiment(_adoptable(client, adopted).experiment_id)
        else:
            experiment = store.experiment(client, str(config.run["experiment_name"]), settings)
        for run_id in tracking.mark_abandoned_runs(client):
            logging.info("marked run %s KILLED: its runner is gone", run_id)
    return experiment


def guarded(
    work: Callable[[], bool],
    client,
    redactor: Redactor,
    run_ids: Callable[[], list[str]],
    ending: Ending,
) -> tuple[str, int]:
    """Do `work` (True: it succeeded) with Ctrl-C and SIGTERM raised as exceptions; the status
    the runs it opened (`run_ids`) end with, and the exit code. Afterwards the signals are
    ignored: nothing may interrupt the bookkeeping that ends the runs. The runner's own error
    is uploaded as the first step of their `ending`, within its deadline."""
    logs.take_over_luigi_logging()
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C ends the run KILLED even if the runner was started with SIGINT ignored, as a
    # script's background job or a CI step is; Python would otherwise leave it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return ("FINISHED", EXIT_OK) if work() else ("FAILED", EXIT_FAILED)
    except Terminated:
        return "KILLED", EXIT_TERMINATED
    except KeyboardInterrupt:
        return "KILLED", EXIT_INTERRUPTED
    except Exception as error:
        text = redactor.text(traceback.format_exc())
        logging.error("runner failed:\n%s", text)  # the traceback goes to the log only
        print(f"error: {redactor.text(str(error)) or type(error).__name__}", file=sys.stderr)
        for run_id in run_ids():
            upload = functools.partial(client.log_text, run_id, text, "errors/runner.txt")
            ending.step("upload the runner's error", upload)
        return "FAILED", EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def finish(
    client,
    run_id,
    status: str,
    plan: Plan,
    log_path: Path,
    url: str,
    earlier=frozenset(),
    extra: str = "",
    say: bool = True,
    ending: Ending | None = None,
) -> dict:
    """End the run: records settled, conclusions and report (`extra`: HTML for it), the log,
    the status; print the summary (unless `say` is False), and a paragraph when the store
    failed on the way. Returns the conclusions (`validation`, `registration`, ...), under
    "problems" what failed in the store, and under "failed" the tasks that failed. Runs
    ended together (a sweep's) share one `ending`, and so its deadline."""
    ending = ending or Ending()
    problems_before = len(ending.problems)
    shared = plan.context.decided(SHARED)  # made by another child of a sweep: its records
    families = [family for family in plan.context.tasks if family not in shared]
    done, unread = _task_records(ending, run_id, families)
    if status != "FINISHED":
        stored = {family: record for family, record in done.items() if family not in unread}
        ending.step("settle interrupted tasks", lambda: runstate.settle(run_id, stored, status))
    for family in shared:
        maker = plan.context.made_by(family, run_id)
        record = ending.step(
            "read a shared task's record", lambda m=maker, f=family: runstate.read_record(m, f)
        )
        done.update({family: record} if record else {})
    task_outcomes = outcomes(plan.context, done, earlier, unread, interrupted=status == "KILLED")
    found = (
        ending.step(
            "write the report",
            lambda: conclude(client, client.get_run(run_id), plan, task_outcomes, url, extra),
        )
        or {}
    )
    logs.flush()
    ending.step("upload the log", lambda: client.log_artifact(run_id, str(log_path), "logs"))
    ended = ending.step("end the run", lambda: client.set_terminated(run_id, status) or True, True)
    shutil.rmtree(store.staging_root() / "staging" / run_id, ignore_errors=True)
    seconds = time.monotonic() - STARTED
    if say:
        log = f"Log: {shown(log_path)}"
        print(summary(task_outcomes, f"{status} in {seconds:.1f}s", url, log, found))
    problems = ending.problems[problems_before:]
    if problems:
        state = f"is {status}" if ended else "may be left RUNNING (the next runner marks it KILLED)"
        print(
            f"\nThe store failed while the run was ending: {'; '.join(problems)}."
            f" The run {state}; what the tasks wrote before stays as it is."
            f" Details: {log_path}",
            file=sys.stderr,
        )
    failed = [f"{o.task}: {o.detail}" for o in task_outcomes if o.outcome == "failed"]
    return {**found, "problems": "; ".join(problems), "failed": "; ".join(failed)}


def _task_records(ending: Ending, run_id: str, families: list[str]):
    """The tasks' records, and the tasks whose record the store could not give. For those,
    what this process recorded itself stands in (a task it ran and saw finish); the others
    are unknown."""
    read = ending.step(
        "read the task records", lambda: runstate.read_listed_records(run_id, families)
    )
    done, unread = read if read is not None else ({}, set(families))
    here = runstate.written_here(run_id)
    done.update({family: here[family] for family in unread if family in here})
    return done, unread


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _adoptable(client: MlflowClient, run_id: str):
    """The run `mlflow run` started (MLFLOW_RUN_ID): only a RUNNING run is adopted, never an
    ended one, which would be turned FINISHED again with other outputs."""
    info = client.get_run(run_id).info
    if info.status != "RUNNING":
        raise ConfigError(
            "MLFLOW_RUN_ID", f"run {run_id} is {info.status}: only a RUNNING run is adopted"
        )
    return info
