"""Where Luigi's and MLflow's own messages go: a log file per invocation, logged with the run,
and the terminal only with `-v`. Every record passes the secret redaction first, from the very
first one: what is logged before the config is read is masked with the environment's secrets
and the patterns, and the secrets the config holds are added once it is read."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from luigiflow.redact import RedactingFilter, Redactor


def start_logging(project_root: Path, verbose: bool) -> tuple[Path, list[logging.Handler]]:
    """Everything Luigi and MLflow log goes to a file that is logged with the run, masked."""
    folder = (
        project_root / ".luigiflow" / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
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
        handler.addFilter(RedactingFilter(Redactor.from_environment()))
        root.addHandler(handler)
    logging.captureWarnings(True)
    return path, handlers


def redact_logs(handlers: list[logging.Handler], redactor: Redactor) -> None:
    """From now on the handlers also mask what `redactor` knows (the secrets of the config)."""
    for handler in handlers:
        for found in handler.filters:
            if isinstance(found, RedactingFilter):
                found.learn(redactor)


def quiet_mlflow_logger() -> None:
    """MLflow prints to the terminal through its own handler: send its records to ours."""
    logger = logging.getLogger("mlflow")
    logger.handlers.clear()
    logger.propagate = True


def take_over_luigi_logging() -> None:
    """Our handlers already take Luigi's records: keep Luigi from adding its own."""
    from luigi.setup_logging import InterfaceLogging

    InterfaceLogging._configured = True


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
