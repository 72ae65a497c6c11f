"""What the terminal shows while a run goes: a line per task, or one line updated in place,
each cut to the terminal's width (120 columns in a log); quiet once its reader is gone.

Progress is printed by Luigi event handlers, in the process that runs the task (the runner or
a Luigi worker process), so it appears wherever the work happens. Everything else Luigi and
MLflow say goes to the log file (and to the terminal with `-v`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from typing import Any

from luigiflow.names import VERBOSE_VARIABLE
from luigiflow.redact import Redactor
from luigiflow.runstate import RUN, find

LOG_WIDTH = 120  # the width of a line in a log, where no terminal says its own


class QuietWhenClosed:
    """Standard output that goes quiet once its reader is gone (`runner.py | head -3`): the
    run goes on and ends with its true status and exit code, the log keeps every line. The
    closed descriptor is pointed at /dev/null, for forked workers and the final flush too."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.closed_early = stream, False

    def write(self, text: str) -> int:
        return self._quietly(self.stream.write, text) or len(text)

    def flush(self) -> None:
        self._quietly(self.stream.flush)

    def _quietly(self, call, *args) -> Any:
        if self.closed_early:
            return None
        try:
            return call(*args)
        except BrokenPipeError:
            self.closed_early = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


CLEAR = "\r\033[K"  # back to the start of the terminal's line, erased


def progress_mode() -> str:
    """How progress is shown: "verbose" (-v: a line per task as it starts and ends), "line"
    (a terminal: one line, updated in place) or "tasks" (a log, as in CI: a line per task as
    it ends)."""
    if os.environ.get(VERBOSE_VARIABLE):
        return "verbose"
    return "line" if sys.stdout.isatty() else "tasks"


def width() -> int:
    """The columns a line may take: the terminal's, or LOG_WIDTH in a log."""
    return shutil.get_terminal_size((LOG_WIDTH, 24)).columns if sys.stdout.isatty() else LOG_WIDTH


def fit(text: str, columns: int | None = None) -> str:
    """Each line of `text` cut to `columns` (the terminal's width), its end marked `…`."""
    columns = columns or width()
    return "\n".join(
        line if len(line) <= columns else line[: columns - 1] + "…" for line in text.split("\n")
    )


def shown(path: os.PathLike | str) -> str:
    """A path as a line shows it: from the working directory when it lies below it (a path
    is never cut to fit)."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def _line(text: str) -> None:
    print(fit(f"{time.strftime('%H:%M:%S')}  {text}"), file=sys.stdout, flush=True)


def _update(text: str) -> None:
    line = fit(f"{time.strftime('%H:%M:%S')}  {text}", width() - 1)  # never wraps
    print(f"{CLEAR}{line}", end="", file=sys.stdout, flush=True)


def _name(task: Any) -> str:
    """The task, and in a sweep which child's task."""
    context = find(task.run_id)
    label = context.label if context else ""
    return f"{task.task_family:<14}" + (f" [{label}]" if label else "")


def _position(task: Any) -> str:
    """ "(3 of 6)": where the task is among those the run makes."""
    context = find(task.run_id)
    to_run = [f for f, e in context.tasks.items() if e.decision == RUN] if context else []
    if task.task_family not in to_run:
        return ""
    return f"({to_run.index(task.task_family) + 1} of {len(to_run)})"


def _reason(task: Any) -> str:
    context = find(task.run_id)
    entry = context.tasks.get(task.task_family) if context else None
    return f"  {entry.reason}" if entry and entry.reason else ""


def _in_sweep(task: Any) -> bool:
    context = find(task.run_id)
    return bool(context and context.label)


def follow(task_class: Any) -> None:
    """Show each task of `task_class` as it starts, finishes or fails (Luigi events), the way
    `progress_mode` says."""
    import luigi

    mode = progress_mode()

    @task_class.event_handler(luigi.Event.START)
    def started(task: Any) -> None:
        if mode == "verbose":
            _line(f"{_name(task)} started")
        elif mode == "line":
            _update(f"{_name(task)} running {_position(task)}")

    @task_class.event_handler(luigi.Event.PROCESSING_TIME)
    def finished(task: Any, seconds: float) -> None:
        if mode == "line":
            _update(f"{_name(task)} finished in {seconds:.1f}s {_position(task)}")
        elif mode == "verbose" or not _in_sweep(task):  # a sweep's log: a line per child
            why = _reason(task) if mode == "tasks" else ""
            _line(f"{_name(task)} finished in {seconds:.1f}s{why}")

    @task_class.event_handler(luigi.Event.FAILURE)
    def failed(task: Any, error: BaseException) -> None:
        if mode == "line":
            print(CLEAR, end="", flush=True)
        _line(f"{_name(task)} FAILED")
        text = "".join(traceback.format_exception(error))
        print(Redactor.from_environment(task.context.config).text(text), file=sys.stderr)
