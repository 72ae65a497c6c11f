"""`python src/runner.py`: check the config, open one MLflow run, let Luigi build, report.

Exit status: 0 when the pipeline succeeded (run FINISHED), 1 when a task failed (FAILED), 2 for
a bad command line, config or store (no run is created), 3 with `--require-validated` when the
model was REJECTED (the run is still FINISHED), 130 on Ctrl-C and 143 on SIGTERM (KILLED).
Luigi's own exit codes are not used: it reports success even when a task fails.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from luigiflow import logs
from luigiflow.names import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from luigiflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from luigiflow.config import Config
    from luigiflow.plan import Plan

UI_ADDRESS = "http://127.0.0.1:5000"
STARTED = time.monotonic()  # the summary reports the whole invocation, imports included


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: Luigi lets that through instead of calling it a task failure."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python src/runner.py",
        description="Run the pipeline in luigi.toml as one MLflow run.",
        epilog="Exit status: 0 success, 1 a task failed, 2 bad command line or config, "
        "3 model rejected (with --require-validated), 130 interrupted, 143 terminated.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="the TOML config (default: LUIGI_CONFIG_PATH from .env)"
    )
    parser.add_argument("--task", help="the task to build (default: [RunConfig] task)")
    parser.add_argument(
        "--from-run",
        metavar="RUN_ID",
        help="start a new run with the config of run RUN_ID (--set still applies on top)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set Trainer.seed=3 (repeatable; values are TOML)",
    )
    parser.add_argument(
        "--workers", type=_positive, default=1, help="Luigi worker processes (default 1)"
    )
    parser.add_argument(
        "--scheduler-url",
        metavar="URL",
        help="a running luigid, e.g. http://127.0.0.1:8082 (default: a local scheduler)",
    )
    _add_cache_options(parser.add_argument_group("reuse of earlier outputs"))
    parser.add_argument(
        "--require-validated",
        action="store_true",
        help="exit 3 if the model fails its validation criteria (for CI scripts)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Luigi's and MLflow's logs too"
    )
    parser.add_argument(
        "--repair-store",
        action="store_true",
        help="after moving the project folder, point the store's artifact locations to it",
    )
    return parser.parse_args(argv)


def _add_cache_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would run or be reused, and why; create no run",
    )
    group.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="TASK",
        help="rerun TASK and what depends on it, even if its outputs exist (repeatable)",
    )
    group.add_argument("--no-cache", action="store_true", help="reuse nothing found by fingerprint")
    group.add_argument(
        "--copy-reused",
        action="store_true",
        help="copy reused outputs into this run instead of pointing at their source",
    )
    group.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="reuse a [PathConfig] source even if made with another config (recorded on the run)",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(project_root: Path, task_modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings(project_root, args.config)
    log_path, handlers = logs.start_logging(settings.project_root, args.verbose)

    # Only now, with the environment complete, may luigi and mlflow be imported.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from luigiflow import store
    from luigiflow.config import ConfigError
    from luigiflow.context import NoContext
    from luigiflow.plan import CacheOptions, make_plan
    from luigiflow.redact import Redactor
    from luigiflow.report import dry_run
    from luigiflow.worker import load_task_classes

    logs.quiet_mlflow_logger()
    if args.repair_store:
        return _repair(settings)
    task_classes = load_task_classes(task_modules)

    adopted = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into that run
    try:
        with store.store_lock(settings):
            client = MlflowClient()  # creates or migrates the store: one runner at a time
            client.search_experiments(max_results=1)
        config = _load_config(args, settings, task_classes)
        redactor = Redactor.from_environment(config.sections)
        logs.redact_logs(handlers, redactor)
        options = CacheOptions(
            not args.no_cache, frozenset(args.force), args.allow_mismatch, args.copy_reused
        )
        plan = make_plan(task_classes[config.task], config, settings, options)
        if args.from_run:
            for note in _from_run_notes(client, args.from_run, settings, task_classes):
                print(f"note: {note}")
        if args.dry_run:
            print(dry_run(plan))
            return EXIT_OK
        with store.store_lock(settings):
            if adopted:  # `mlflow run` started the run, in the experiment it was given
                experiment = client.get_experiment(client.get_run(adopted).info.experiment_id)
            else:
                name = str(config.run["experiment_name"])
                experiment = store.experiment(client, name, settings)
            for run_id in store.mark_abandoned_runs(client, experiment.experiment_id):
                logging.info("marked run %s KILLED: its runner is gone", run_id)
    except (ConfigError, store.StoreMoved, MlflowException, NoContext) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    return _run(settings, args, client, experiment, plan, config, redactor, log_path, adopted)


def _load_config(args: argparse.Namespace, settings: Settings, task_classes) -> Config:
    """luigi.toml (or --config), or with --from-run the config an earlier run logged."""
    import toml

    from luigiflow.config import ConfigError, load_config, parse_config
    from luigiflow.names import CONFIG_ARTIFACT
    from luigiflow.targets import read_run_text

    root = settings.project_root
    if not args.from_run:
        return load_config(settings.config_path, root, task_classes, args.overrides, args.task)
    source = f"run {args.from_run} {CONFIG_ARTIFACT}"
    text = read_run_text(args.from_run, CONFIG_ARTIFACT)  # MlflowException: no such run
    if text is None:
        raise ConfigError(source, "not found: the run was not made by this runner")
    try:
        raw = toml.loads(text)
    except toml.TomlDecodeError as error:
        raise ConfigError(source, f"not valid TOML: {error}") from None
    return parse_config(raw, source, root, task_classes, args.overrides, args.task)


def _from_run_notes(client: MlflowClient, run_id: str, settings: Settings, task_classes) -> list:
    """What differs between this checkout and the one that made run `run_id`."""
    from luigiflow.context import NoContext, load
    from luigiflow.provenance import git_state
    from luigiflow.worker import code_differences

    notes = []
    commit = client.get_run(run_id).data.tags.get("mlflow.source.git.commit")
    git = git_state(settings.project_root)
    if commit and git is not None and (git.commit != commit or git.dirty):
        changes = " with uncommitted changes" if git.dirty else ""
        notes.append(
            f"run {run_id} was made at commit {commit[:12]}; "
            f"this checkout is at {git.commit[:12]}{changes}"
        )
    try:
        differences = code_differences(load(run_id), task_classes)
    except NoContext:
        differences = ""
    if differences:
        notes.append(f"code differs from run {run_id}: {differences}; those tasks rerun")
    return notes


def _run(settings, args, client, experiment, plan, config, redactor, log_path, adopted) -> int:
    """Create the run, build, and end the run with a status that matches the exit code."""
    from luigiflow import tracking, worker

    logs.take_over_luigi_logging()
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C ends the run KILLED even if the runner was started with SIGINT ignored, as a
    # script's background job or a CI step is; Python would otherwise leave it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_id, url, status, code = None, "", "FAILED", EXIT_FAILED
    try:
        extra = {"luigiflow.from_run": args.from_run} if args.from_run else {}
        config.run["tags"] = {**dict(config.run.get("tags") or {}), **extra}
        run_id = tracking.start_run(
            client, experiment.experiment_id, config, plan.context, redactor,
            settings.project_root, sys.argv, adopted,
        )  # fmt: skip
        url = tracking.run_url(settings.tracking_uri, experiment.experiment_id, run_id, UI_ADDRESS)
        context, _ = worker.attach(run_id, settings.project_root, _classes(plan))
        outputs = {task.task_family: task.outputs for task in plan.tasks}
        tracking.prepare(client, run_id, context, outputs, settings.tracking_uri, UI_ADDRESS)
        print(f"Run {run_id} started: {config.task} in experiment '{experiment.name}'")
        if worker.build(run_id, context, _classes(plan), args.workers, args.scheduler_url):
            status, code = "FINISHED", EXIT_OK
    except Terminated:
        status, code = "KILLED", EXIT_TERMINATED
    except KeyboardInterrupt:
        status, code = "KILLED", EXIT_INTERRUPTED
    except Exception:
        text = traceback.format_exc()
        print(redactor.text(text), file=sys.stderr)
        logging.error("runner failed:\n%s", text)
        if run_id:
            client.log_text(run_id, redactor.text(text), "errors/runner.txt")
    finally:
        # Nothing may interrupt the bookkeeping that ends the run.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if run_id:
            found = _finish(client, run_id, status, plan, log_path, url)
            if (
                code == EXIT_OK
                and args.require_validated
                and found.get("validation") != "VALIDATED"
            ):
                code = EXIT_REJECTED
    return code


def _classes(plan: Plan) -> dict[str, type]:
    return {task.task_family: type(task) for task in plan.tasks}


def _finish(client, run_id: str, status: str, plan: Plan, log_path: Path, url: str) -> dict:
    """End the run: conclusions and the HTML report, the log, the status; print the summary.
    Returns the conclusions (`validation`, `registration`, ...)."""
    from luigiflow import records, tracking
    from luigiflow.report import conclude, outcomes, summary

    found: dict[str, str] = {}
    task_outcomes = outcomes(plan.context, records.read_all(run_id, list(plan.context.tasks)))
    try:
        found = conclude(client, client.get_run(run_id), plan, task_outcomes, url)
    except Exception:  # a broken report must not leave the run RUNNING
        logging.exception("could not write the conclusions or the report")
    logs.flush()
    tracking.finish(client, run_id, status, log_path)
    seconds = time.monotonic() - STARTED
    print(summary(task_outcomes, f"{status} in {seconds:.1f}s", url, f"Log: {log_path}", found))
    return found


def exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down.

    Python's own shutdown frees every module and object one by one: with mlflow, scikit-learn
    and pandas loaded that takes about 0.7 s after the run has already ended. Everything that
    matters is done by then (the run is terminated, its artifacts written); exit handlers still
    run and logs and terminal output are flushed before the process ends.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _repair(settings: Settings) -> int:
    from luigiflow.store import repair_store

    if not settings.embedded_store:
        print("error: --repair-store applies to the embedded SQLite store only", file=sys.stderr)
        return EXIT_USAGE
    rewritten = repair_store(settings)
    for old, new in rewritten:
        print(f"artifact locations {old} -> {new}")
    print("store repaired" if rewritten else "nothing to repair: every artifact location exists")
    return EXIT_OK
