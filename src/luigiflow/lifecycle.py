"""A run's life around its build, for a plain run and a sweep alike: the experiment it goes
in, the build guarded against Ctrl-C and SIGTERM, and the ending (records settled, conclusions
and report, the log, the status) that nothing may interrupt.
"""

from __future__ import annotations

import functools
import logging
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from luigiflow import logs, runstate, store
from luigiflow.config import Config, ConfigError
from luigiflow.ending import Ending
from luigiflow.names import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED
from luigiflow.plan import Plan
from luigiflow.redact import Redactor
from luigiflow.report import conclude, outcomes, summary
from luigiflow.runstate import SHARED, NoContext
from luigiflow.settings import Settings

UI_ADDRESS = "http://127.0.0.1:5000"
STARTED = time.monotonic()  # the summary reports the whole invocation, imports included
USAGE_ERRORS = (ConfigError, store.StoreMoved, store.StoreUnavailable, MlflowException, NoContext)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: Luigi lets that through instead of calling it a task failure."""


def open_experiment(client: MlflowClient, settings: Settings, config: Config, adopted: str | None):
    """The run's experiment (created if need be); runs there left RUNNING by a dead runner are
    marked KILLED first."""
    with store.store_lock(settings):
        if adopted:  # `mlflow run` started the run, in the experiment it was given
            experiment = client.get_experiment(_adoptable(client, adopted).experiment_id)
        else:
            experiment = store.experiment(client, str(config.run["experiment_name"]), settings)
        for run_id in mark_abandoned_runs(client):
            logging.info("marked run %s KILLED: its runner is gone", run_id)
    return experiment


def mark_abandoned_runs(client: MlflowClient, experiment_ids: list[str] | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs (of every experiment, or these) whose runner is gone:
    killed outright on this host, or silent for three heartbeats on another. Best-effort: a
    store that forbids it (another user's run on a server) leaves the run as it is."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    killed = []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'"):
        record = runstate.read_runner_record(run.info.run_id)
        if record is None or not runstate.runner_gone(record, run.info.start_time / 1000):
            continue  # not a runner's run, or its runner is alive
        try:
            client.set_terminated(run.info.run_id, "KILLED")
        except MlflowException:
            logging.warning("could not mark run %s KILLED", run.info.run_id, exc_info=True)
            continue
        killed.append(run.info.run_id)
        try:
            runstate.settle_abandoned(run.info.run_id)
        except Exception:  # the run's status is what counts; its records say so where they can
            logging.warning("could not settle the records of run %s", run.info.run_id)
    return killed


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat in the runner record, every interval, while the run works: how
    runners on other hosts tell a live run from one whose runner died. Only a record of this
    process is refreshed: one that names another (which took the run over) is left alone."""

    def __init__(self, *run_ids: str) -> None:
        super().__init__(name="luigiflow-heartbeat", daemon=True)
        self.run_ids, self.stopped = run_ids, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(runstate.heartbeat_interval()):
            for run_id in self.run_ids:  # a sweep's parent and children
                try:
                    record = runstate.read_runner_record(run_id)
                    if record is not None and record.owned_by_this_process():
                        record.heartbeat = time.time()
                        runstate.write_runner_record(run_id, record)
                except Exception:  # a missed beat is not a failed run
                    logging.warning("heartbeat of run %s failed", run_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()


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
    task_outcomes = outcomes(plan.context, done, earlier, unread)
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
        print(summary(task_outcomes, f"{status} in {seconds:.1f}s", url, f"Log: {log_path}", found))
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
    from luigiflow.config import ConfigError

    info = client.get_run(run_id).info
    if info.status != "RUNNING":
        raise ConfigError(
            "MLFLOW_RUN_ID", f"run {run_id} is {info.status}: only a RUNNING run is adopted"
        )
    return info
