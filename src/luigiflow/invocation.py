"""One invocation of the runner on one run: open it (a new run, or a resumed one), build what
is pending through the worker path, and end it with a status that matches the exit code.

Exit status: 0 when the pipeline succeeded (run FINISHED), 1 when a task failed (FAILED), 2 for
a bad command line, config or store (no run is created or touched), 3 with
`--require-validated` when the model was REJECTED (the run is still FINISHED), 130 on Ctrl-C and
143 on SIGTERM (KILLED). Luigi's own exit codes are not used: it reports success even when a
task fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import toml
from mlflow import MlflowClient

from luigiflow import logs, runstate, scheduler, store, sweep, tracking, worker
from luigiflow.config import Config, ConfigError, load_config, parse_config
from luigiflow.ending import Ending
from luigiflow.lifecycle import (
    UI_ADDRESS,
    USAGE_ERRORS,
    Heartbeat,
    finish,
    guarded,
    open_experiment,
)
from luigiflow.names import (
    CONFIG_ARTIFACT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    SWEEP_TAG,
)
from luigiflow.plan import CacheOptions, Plan, make_plan
from luigiflow.redact import Redactor, is_secret_key, redact_uri
from luigiflow.report import dry_run, say_before_run
from luigiflow.runstate import load as load_context
from luigiflow.settings import Settings
from luigiflow.store import read_run_text


def new_run(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """Plan, create the run, build, end it; or with --dry-run only say what would happen."""
    adopted = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into that run
    try:
        client = store.open_store(settings)
        if settings.scheduler_url:
            scheduler.check(settings.scheduler_url)
        config = _load_config(args, settings, task_classes)
        redactor = _redact_logs(handlers, config)
        options = CacheOptions(
            not args.no_cache, frozenset(args.force), args.allow_mismatch, args.copy_reused
        )
        grid = sweep.load(config.sweep, args.sweeps, str(config.path), _parameters(task_classes))
        if grid:
            from luigiflow import sweep_run

            if adopted:
                raise ConfigError(
                    "MLFLOW_RUN_ID", "a sweep makes a parent run and its children itself: "
                    "start it with python src/runner.py, not mlflow run",
                )  # fmt: skip

            def child_config(overrides: list[str]) -> Config:
                return _load_config(args, settings, task_classes, overrides)

            return sweep_run.run(
                args,
                settings,
                task_classes,
                grid,
                child_config,
                options,
                client,
                redactor,
                log_path,
            )
        plan = make_plan(task_classes[config.task], config, settings, options)
        say_before_run(plan)
        if args.from_run:
            for note in tracking.differences_from(
                args.from_run, settings.project_root, task_classes
            ):
                print(f"note: {note}")
        if args.dry_run:
            print(dry_run(plan))
            return EXIT_OK
        experiment = open_experiment(client, settings, config, adopted)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    def begin() -> tuple[str, str]:
        extra = {"luigiflow.from_run": args.from_run} if args.from_run else {}
        config.run["tags"] = {**dict(config.run.get("tags") or {}), **extra}
        run_id = tracking.start_run(
            client, experiment.experiment_id, config, plan.context, redactor,
            settings.project_root, sys.argv, adopted,
        )  # fmt: skip
        outputs = {task.task_family: task.outputs for task in plan.tasks}
        tracking.prepare(client, run_id, plan.context, outputs, settings.tracking_uri, UI_ADDRESS)
        print(f"Run {run_id} started: {config.task} in experiment '{experiment.name}'", flush=True)
        url = tracking.run_url(settings.tracking_uri, experiment.experiment_id, run_id, UI_ADDRESS)
        return run_id, url

    return _run(settings, args, client, plan, redactor, log_path, begin, task_classes)


def _redact_logs(handlers, config: Config) -> Redactor:
    redactor = Redactor.from_environment(config.sections)
    logs.redact_logs(handlers, redactor)
    return redactor


def resume(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """--resume RUN_ID: the same run, with its own config and code, finishing what is left."""

    from luigiflow import tracking
    from luigiflow.config import ConfigError
    from luigiflow.redact import Redactor

    run_id = args.resume
    try:
        _refuse_planning_options(args, "--resume", "a run resumes as it was planned")
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
        return run_id, tracking.run_url(settings.tracking_uri, experiment_id, run_id, UI_ADDRESS)

    return _run(settings, args, client, plan, redactor, log_path, begin, task_classes, earlier)


def join(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """--join RUN_ID: run whatever tasks of a RUNNING run the run's luigid hands this process,
    into the same MLflow run. The invocation that created the run still owns it: it waits for
    the pipeline and ends the run; a joined worker exits once no task of the run is left, and
    leaves its log in the run (`logs/workers/<host>-<pid>/`) beside the creator's."""
    run_id = args.join
    try:
        _refuse_planning_options(args, "--join", "a worker joins a run as it was planned")
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
            _check_joinable(child, load_context(child).scheduler, settings.scheduler_url)
            context = worker.attach(child, task_classes)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logs.redact_logs(handlers, Redactor.from_environment(context.config))
    logs.take_over_luigi_logging()
    what = context.root if joined == [run_id] else f"a sweep of {len(joined)} runs"
    print(f"Joined run {run_id}: {what} through {redact_uri(settings.scheduler_url)}")
    try:
        if joined == [run_id]:
            built = worker.build(
                run_id, context, task_classes, args.workers, settings.scheduler_url
            )
        else:
            finished = worker.build_sweep(
                joined, task_classes, args.workers, settings.scheduler_url
            )
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


def _check_joinable(run_id: str, recorded: str, url: str, waits: int = 5) -> None:
    """The run must be built through a luigid, and this one must know its tasks (a worker
    pointed at another luigid would build the whole run on its own). Right after the run
    starts its tasks may not be there yet: ask a few times."""
    if not recorded:
        raise ConfigError(
            "--join",
            f"run {run_id} is built by a scheduler inside its runner, which no other "
            "process can join: start runs with --profile shared (or --scheduler-url)",
        )
    for attempt in range(waits):
        if scheduler.tasks_of(url, run_id):
            return
        time.sleep(2 if attempt < waits - 1 else 0)
    raise ConfigError(
        "--join",
        f"luigid at {redact_uri(url)} knows no task of run {run_id}: the run is built through "
        f"{recorded}",
    )


def _refuse_planning_options(args: argparse.Namespace, flag: str, why: str) -> None:
    """`--resume` and `--join` work on a run as it was planned: no option may change that."""
    given = [
        option
        for option, value in (
            ("--set", args.overrides), ("--sweep", args.sweeps), ("--task", args.task),
            ("--dry-run", args.dry_run),
            ("--force", args.force), ("--no-cache", args.no_cache),
            ("--copy-reused", args.copy_reused), ("--allow-mismatch", args.allow_mismatch),
        )
        if value
    ]  # fmt: skip
    if given:
        raise ConfigError(flag, f"{why}: {', '.join(given)} does not go with it")


def _parameters(task_classes) -> dict[str, list[str]]:
    """Each task's parameters that a sweep may vary (not the run id, not a secret)."""
    return {
        family: [n for n, _ in cls.get_params() if n != "run_id" and not is_secret_key(n)]
        for family, cls in task_classes.items()
    }


def _load_config(
    args: argparse.Namespace, settings: Settings, task_classes, extra: Sequence[str] = ()
) -> Config:
    """luigi.toml (or --config), or with --from-run the config an earlier run logged; then
    --set, and `extra` overrides (a sweep's values for one child)."""

    from luigiflow.config import ConfigError

    root = settings.project_root
    overrides = [*args.overrides, *extra]
    if not args.from_run:
        return load_config(settings.config_path, root, task_classes, overrides, args.task)
    source = f"run {args.from_run} {CONFIG_ARTIFACT}"
    text = read_run_text(args.from_run, CONFIG_ARTIFACT)  # MlflowException: no such run
    if text is None:
        raise ConfigError(source, "not found: the run was not made by this runner")
    try:
        raw = toml.loads(text)
    except toml.TomlDecodeError as error:
        raise ConfigError(source, f"not valid TOML: {error}") from None
    return parse_config(raw, source, root, task_classes, overrides, args.task)


def _run(
    settings, args, client, plan, redactor, log_path, begin, task_classes, earlier=frozenset()
) -> int:
    """Open the run (`begin`: create it, or reopen it), build, and end the run with a status
    that matches the exit code."""
    opened: dict[str, str] = {}
    heartbeat = None

    def open_and_build() -> bool:
        nonlocal heartbeat
        opened["run_id"], opened["url"] = begin()
        heartbeat = Heartbeat(opened["run_id"])
        heartbeat.start()
        return _build(settings, args, opened["run_id"], task_classes)

    ending = Ending()
    status, code = guarded(
        open_and_build, client, redactor, lambda: list(opened.values())[:1], ending
    )
    if heartbeat is not None:
        heartbeat.stop()
    if opened:
        found = finish(
            client, opened["run_id"], status, plan, log_path, opened["url"], earlier,
            ending=ending,
        )  # fmt: skip
        if found.get("problems"):
            code = EXIT_FAILED if code == EXIT_OK else code
        elif code == EXIT_OK and args.require_validated and found.get("validation") != "VALIDATED":
            code = EXIT_REJECTED
    return code


def _build(settings: Settings, args, run_id: str, task_classes) -> bool:
    """Build the run through the worker path; when it failed with other processes on it, let
    what they are running finish before the run is ended."""
    context = worker.attach(run_id, task_classes)
    built = worker.build(run_id, context, task_classes, args.workers, settings.scheduler_url)
    if not built and settings.scheduler_url:
        scheduler.wait_for_others(settings.scheduler_url, run_id)
    return built
