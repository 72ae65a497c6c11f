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
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from luigiflow import redact as logs
from luigiflow.names import CONFIG_ARTIFACT, EXIT_OK, EXIT_USAGE, VERBOSE_VARIABLE
from luigiflow.redact import is_secret_key, quiet_mlflow_logger, start_logging
from luigiflow.settings import Settings, UnknownProfile, import_luigi, load_settings

if TYPE_CHECKING:
    from luigiflow.config import Config
    from luigiflow.redact import Redactor


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python src/runner.py",
        description="Run the pipeline in luigi.toml as one MLflow run.",
        epilog="Exit status: 0 success, 1 a task failed, 2 bad command line or config, "
        "3 model rejected (with --require-validated), 130 interrupted, 143 terminated.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config", metavar="PATH", help="the TOML config (default: LUIGI_CONFIG_PATH from .env)"
    )
    source.add_argument(
        "--from-run",
        metavar="RUN_ID",
        type=_run_id,
        help="start a new run with the config of run RUN_ID (--set still applies on top)",
    )
    source.add_argument(
        "--resume",
        metavar="RUN_ID",
        type=_run_id,
        help="finish a FAILED or KILLED run in place: its finished tasks are kept",
    )
    source.add_argument(
        "--join",
        metavar="RUN_ID",
        type=_run_id,
        help="work on a RUNNING run started through luigid: run the tasks the scheduler hands out",
    )
    parser.add_argument(
        "--profile",
        help="add .env.<PROFILE> to the environment, e.g. shared (default: LUIGIFLOW_PROFILE, "
        "else local)",
    )
    parser.add_argument("--task", help="the task to build (default: [RunConfig] task)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set Trainer.seed=3 (repeatable; values are TOML)",
    )
    parser.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="run one child run per value (repeatable: every combination), e.g. "
        "--sweep Trainer.seed=0,1,2; values are TOML, split on top-level commas",
    )
    parser.add_argument(
        "--workers", type=_positive, default=1, help="Luigi worker processes (default 1)"
    )
    parser.add_argument(
        "--scheduler-url",
        metavar="URL",
        help="a running luigid, e.g. http://127.0.0.1:8082 (default: LUIGIFLOW_SCHEDULER_URL, "
        "else a scheduler inside the runner)",
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
        "--mark-stale",
        action="store_true",
        help="mark KILLED the RUNNING runs whose runner is gone (dead here, or silent elsewhere)",
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


def _run_id(text: str) -> str:
    """A run id: 32 hexadecimal digits (an empty `--from-run ""` must not mean "no run")."""
    if not re.fullmatch(r"[0-9a-f]{32}", text.strip()):
        raise argparse.ArgumentTypeError(f"'{text}' is not a run id (32 hexadecimal digits)")
    return text.strip()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(project_root: Path, task_modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(project_root, args.config, args.profile, args.scheduler_url)
    except UnknownProfile as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    log_path, handlers = start_logging(settings.project_root, args.verbose)
    if args.verbose:
        os.environ[VERBOSE_VARIABLE] = "1"  # for the progress shown by forked workers too

    # Only now, with the environment complete, may luigi and mlflow be imported.
    import_luigi()
    from luigiflow import lifecycle, worker
    from luigiflow.terminal import QuietWhenClosed

    sys.stdout = QuietWhenClosed(sys.stdout)
    quiet_mlflow_logger()
    if args.repair_store:
        return _repair(settings)
    if args.mark_stale:
        return _mark_stale()
    task_classes = worker.load_task_classes(task_modules)
    if args.resume or args.join:
        problem = _planning_options(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.resume:
        return lifecycle.resume(args, settings, task_classes, log_path, handlers)
    if args.join:
        return worker.join(args, settings, task_classes, log_path, handlers)
    return _new_run(args, settings, task_classes, log_path, handlers)


def _new_run(args, settings: Settings, task_classes, log_path: Path, handlers) -> int:
    """Plan, create the run, build, end it (or a sweep's runs); or with --dry-run only say what
    would happen."""
    from luigiflow import scheduler, store, sweep, sweep_run, tracking
    from luigiflow.config import SWEEP_SECTION, ConfigError
    from luigiflow.lifecycle import new_run, open_experiment
    from luigiflow.plan import CacheOptions, make_plan
    from luigiflow.report import dry_run, say_before_run
    from luigiflow.worker import USAGE_ERRORS

    adopted = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into that run
    try:
        client = store.open_store(settings)
        if settings.scheduler_url:
            scheduler.check(settings.scheduler_url)
        config = _load_config(args, settings, task_classes)
        redactor = _redact_logs(handlers, config)
        options = CacheOptions(
            enabled=not args.no_cache,
            force=frozenset(args.force),
            allow_mismatch=args.allow_mismatch,
            copy=args.copy_reused,
        )
        grid = sweep.load(config.sweep, args.sweeps, str(config.path), _sweepable(task_classes))
        if grid:
            if adopted:
                raise ConfigError(
                    "MLFLOW_RUN_ID", "a sweep makes a parent run and its children itself: "
                    "start it with python src/runner.py, not mlflow run",
                )  # fmt: skip

            def child_config(overrides: list[str]) -> Config:
                return _load_config(args, settings, task_classes, overrides)

            return sweep_run.run(
                args, settings, task_classes, grid, child_config, options, client, redactor,
                log_path,
            )  # fmt: skip
        plan = make_plan(task_classes[config.task], config, settings, options)
        if config.sweep.get("select") and not args.task:  # unused here: checked all the same
            where = config.source(SWEEP_SECTION, "select")
            sweep_run.check_select(str(config.sweep["select"]), where, [plan])
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
    return new_run(
        args, settings, client, plan, config, experiment, redactor, log_path, task_classes, adopted
    )


def _redact_logs(handlers, config: Config) -> Redactor:
    from luigiflow.redact import Redactor

    redactor = Redactor.from_environment(config.sections)
    logs.redact_logs(handlers, redactor)
    return redactor


def _planning_options(args: argparse.Namespace) -> str:
    """`--resume` and `--join` work on a run as it was planned: no option may change that.
    What is wrong, in words; "" when nothing is."""
    from luigiflow.config import ConfigError

    flag, why = (
        ("--resume", "a run resumes as it was planned")
        if args.resume
        else ("--join", "a worker joins a run as it was planned")
    )
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
    return str(ConfigError(flag, f"{why}: {', '.join(given)} does not go with it")) if given else ""


def _load_config(
    args: argparse.Namespace, settings: Settings, task_classes, extra: Sequence[str] = ()
) -> Config:
    """luigi.toml, --config or --from-run's logged config; then --set, and `extra` (swept)."""

    from mlflow.exceptions import MlflowException

    from luigiflow.config import ConfigError, load_config, parse_config, parse_toml
    from luigiflow.store import read_run_text

    root, overrides = settings.project_root, args.overrides
    if not args.from_run:
        return load_config(settings.config_path, root, task_classes, overrides, args.task, extra)
    source = f"run {args.from_run} {CONFIG_ARTIFACT}"
    try:
        text = read_run_text(args.from_run, CONFIG_ARTIFACT)
    except MlflowException:  # no such run in this store
        raise ConfigError("--from-run", f"no run {args.from_run} in this store") from None
    if text is None:
        raise ConfigError(source, "not found: the run was not made by this runner")
    raw = parse_toml(text, source)
    return parse_config(raw, source, root, task_classes, overrides, args.task, extra)


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


def _mark_stale() -> int:
    from mlflow import MlflowClient

    from luigiflow.tracking import mark_abandoned_runs

    killed = mark_abandoned_runs(MlflowClient())
    for run_id in killed:
        print(f"marked run {run_id} KILLED: its runner is gone")
    print(f"{len(killed)} stale run(s) marked" if killed else "no stale run")
    return EXIT_OK


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


def _sweepable(task_classes: Mapping[str, type]) -> dict[str, list[str]]:
    """Each task's parameters that a sweep may vary (not the run id, not a secret)."""
    return {
        family: [n for n, _ in cls.get_params() if n != "run_id" and not is_secret_key(n)]
        for family, cls in task_classes.items()
    }
