"""What the terminal shows: a line per task as it starts and ends, then a summary.

Progress lines are printed by the process that runs the task (the runner or a Luigi worker
process), so they appear wherever the work happens. Everything else Luigi and MLflow say goes
to the log file (and to the terminal with `-v`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


def _line(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", file=sys.stdout, flush=True)


def task_started(task: str) -> None:
    _line(f"{task:<14} started")


def task_finished(task: str, seconds: float) -> None:
    _line(f"{task:<14} finished in {seconds:.1f}s")


def task_failed(task: str, traceback_text: str) -> None:
    _line(f"{task:<14} FAILED")
    print(traceback_text, file=sys.stderr, flush=True)


@dataclass
class TaskOutcome:
    task: str
    outcome: str  # ran, reused, failed, upstream failed, not run, not needed
    seconds: float | None = None
    detail: str = ""


def summary(outcomes: list[TaskOutcome], status: str, run_url: str, log_hint: str = "") -> str:
    """The end-of-run table a person reads."""
    width = max([len(o.task) for o in outcomes] + [4])
    lines = ["", f"Run {status}"]
    for o in outcomes:
        seconds = f"{o.seconds:6.1f}s" if o.seconds is not None else " " * 7
        detail = f"  {o.detail}" if o.detail else ""
        lines.append(f"  {o.task:<{width}}  {o.outcome:<16}{seconds}{detail}")
    lines.append(f"  MLflow: {run_url}")
    if log_hint:
        lines.append(f"  {log_hint}")
    return "\n".join(lines)
