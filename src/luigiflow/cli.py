"""`python src/runner.py`: check the config, open one MLflow run, let Luigi build, report.

Exit status: 0 when the pipeline succeeded (run FINISHED), 1 when a task failed (FAILED), 2 for
a bad command line, config or store (no run is created), 3 with `--require-validated` when the
model was REJECTED (the run is still FINISHED), 130 on Ctrl-C and 143 on SIGTERM (KILLED).
Luigi's own exit codes are not used: it reports success even when a task fails.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from luigiflow.settings import Settings, load_settings

UI_ADDRESS = "http://127.0.0.1:5000"
STARTED = time.monotonic()  # the summary reports the whole invocation, imports included
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_REJECTED = 3
REPORT = "report.html"


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
    cache = parser.add_argument_group("reuse of earlier outputs")
    cache.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would run or be reused, and why; create no run",
    )
    cache.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="TASK",
        help="rerun TASK and what depends on it, even if its outputs exist (repeatable)",
    )
    cache.add_argument("--no-cache", action="store_true", help="reuse nothing found by fingerprint")
    cache.add_argument(
        "--copy-reused",
        action="store_true",
        help="copy reused outputs into this run instead of pointing at their source",
    )
    cache.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="reuse a [PathConfig] source even if made with another config (recorded on the run)",
    )
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(project_root: Path, task_modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings(project_root, args.config)
    log_path, handlers = _start_logging(settings, args.verbose)

    # Only now, with the environment complete, may luigi and mlflow be imported.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from luigiflow import tracking
    from luigiflow.config import ConfigError, load_config
    from luigiflow.plan import CacheOptions, make_plan
    from luigiflow.redact import RedactingFilter, Redactor
    from luigiflow.report import dry_run
    from luigiflow.task import PipelineTask

    _quiet_mlflow_logger()
    if args.repair_store:
        return _repair(settings)
    for module in task_modules:
        importlib.import_module(module)
    task_classes = {cls.get_task_family(): cls for cls in _subclasses(PipelineTask)}

    adopted = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into that run
    try:
        config = load_config(
            settings.config_path, settings.project_root, task_classes, args.overrides, args.task
        )
        redactor = Redactor.from_environment(config.sections)
        for handler in handlers:
            handler.addFilter(RedactingFilter(redactor))
        with tracking.store_lock(settings):
            client = MlflowClient()  # creates or migrates the store: one runner at a time
            client.search_experiments(max_results=1)
        options = CacheOptions(not args.no_cache, frozenset(args.force), args.allow_mismatch)
        plan = make_plan(task_classes[config.task], config, settings, options)
        if args.dry_run:
            print(dry_run(plan))
            return EXIT_OK
        with tracking.store_lock(settings):
            if adopted:  # `mlflow run` started the run, in the experiment it was given
                experiment = client.get_experiment(client.get_run(adopted).info.experiment_id)
            else:
                experiment = tracking.experiment(
                    client, str(config.run["experiment_name"]), settings
                )
            for run_id in tracking.mark_abandoned_runs(client, experiment.experiment_id):
                logging.info("marked run %s KILLED: its runner is gone", run_id)
    except (ConfigError, tracking.StoreMoved, MlflowException) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    return _run(settings, args, client, experiment, plan, config, redactor, log_path, adopted)


def _run(settings, args, client, experiment, plan, config, redactor, log_path, adopted) -> int:
    """Create the run, build, and end the run with a status that matches the exit code."""
    import luigi
    from luigi.setup_logging import InterfaceLogging

    from luigiflow import tracking
    from luigiflow.plan import activate, resolved_config

    InterfaceLogging._configured = True  # our handlers already take Luigi's records
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Ctrl-C ends the run KILLED even if the runner was started with SIGINT ignored, as a
    # script's background job or a CI step is; Python would otherwise leave it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_id, status, code = None, "FAILED", EXIT_FAILED
    try:
        run_id = tracking.start_run(
            client,
            experiment.experiment_id,
            config.run,
            resolved_config(plan, config),
            redactor,
            settings.project_root,
            sys.argv,
            tracking.plan_tags(plan),
            adopted,
        )
        url = tracking.run_url(settings.tracking_uri, experiment.experiment_id, run_id, UI_ADDRESS)
        activate(plan, run_id, copy=args.copy_reused)
        tracking.record_plan(client, run_id, plan, settings.tracking_uri, UI_ADDRESS)
        print(f"Run {run_id} started: {config.task} in experiment '{experiment.name}'")
        root = plan.for_run(run_id)
        result = luigi.build(
            [root],
            detailed_summary=True,
            local_scheduler=not args.scheduler_url,
            scheduler_url=args.scheduler_url or "",
            workers=args.workers,
        )
        logging.info("%s", result.summary_text)
        if result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY") and root.complete():
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
            found = _finish(client, run_id, status, plan, log_path, url, time.monotonic() - STARTED)
            if (
                code == EXIT_OK
                and args.require_validated
                and found.get("validation") != "VALIDATED"
            ):
                code = EXIT_REJECTED
    return code


def _finish(client, run_id, status, plan, log_path, url, seconds) -> dict[str, str]:
    """End the run: conclusions and the HTML report, the log, the status; print the summary.
    Returns the conclusions (`validation`, `registration`, ...)."""
    from luigiflow.report import outcomes, summary

    found: dict[str, str] = {}
    run = client.get_run(run_id)
    tags = run.data.tags
    try:
        found = _conclude(client, run, plan, url)
    except Exception:  # a broken report must not leave the run RUNNING
        logging.exception("could not write the conclusions or the report")
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        client.log_artifact(run_id, str(log_path), "logs")
    finally:
        client.set_terminated(run_id, status)
    print(
        summary(outcomes(plan, tags), f"{status} in {seconds:.1f}s", url, f"Log: {log_path}", found)
    )
    return found


def _conclude(client, run, plan, url) -> dict[str, str]:
    """Each task's conclusions, tagged on the run, and the run's report (report.html)."""
    from mlflow.entities import RunTag

    from luigiflow.cards import run_report
    from luigiflow.plan import locate
    from luigiflow.report import outcomes

    run_id, tags = run.info.run_id, run.data.tags
    folders = locate(plan, run_id)
    found: dict[str, str] = {}
    for task in plan.tasks:
        folder = folders[task.task_family]
        if folder is not None and folder.manifest() is not None:
            found.update(task.clone(run_id=run_id).conclusions())
    client.log_batch(run_id, tags=[RunTag(f"luigiflow.{k}", v) for k, v in found.items() if v])
    facts = {
        "run": f"{run.info.run_name} ({run_id})",
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000)),
        "description": tags.get("mlflow.note.content", ""),
        "git commit": tags.get("mlflow.source.git.commit", ""),
        **found,
        "MLflow": url,
    }
    title = f"Run report: {plan.root.task_family} in {facts['experiment']}"
    html = run_report(title, facts, outcomes(plan, tags), folders)
    client.log_text(run_id, html, REPORT)
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


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _start_logging(settings: Settings, verbose: bool) -> tuple[Path, list[logging.Handler]]:
    """Everything Luigi and MLflow log goes to a file that is logged with the run."""
    folder = (
        settings.project_root
        / ".luigiflow"
        / "logs"
        / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runner.log"
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
    )
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.captureWarnings(True)
    return path, handlers


def _quiet_mlflow_logger() -> None:
    """MLflow prints to the terminal through its own handler: send its records to ours."""
    logger = logging.getLogger("mlflow")
    logger.handlers.clear()
    logger.propagate = True


def _repair(settings: Settings) -> int:
    from luigiflow.tracking import repair_store

    if not settings.embedded_store:
        print("error: --repair-store applies to the embedded SQLite store only", file=sys.stderr)
        return EXIT_USAGE
    rewritten = repair_store(settings)
    for old, new in rewritten:
        print(f"artifact locations {old} -> {new}")
    print("store repaired" if rewritten else "nothing to repair: every artifact location exists")
    return EXIT_OK
