"""What the terminal shows: a line per task as it starts and ends, then a summary.

Progress lines are printed by the process that runs the task (the runner or a Luigi worker
process), so they appear wherever the work happens. Everything else Luigi and MLflow say goes
to the log file (and to the terminal with `-v`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from luigiflow.plan import Plan


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


def outcomes(plan: Plan, tags: Mapping[str, str]) -> list[TaskOutcome]:
    """What became of each task, from the tags the tasks wrote on the run (in any process)."""
    from luigiflow.task import DURATION_TAG, STATUS_TAG

    found, done = [], set(plan.reused)
    for task in plan.tasks:
        family = task.task_family
        status = tags.get(STATUS_TAG.format(family))
        seconds = (
            float(tags[DURATION_TAG.format(family)])
            if DURATION_TAG.format(family) in tags
            else None
        )
        if family in plan.reused:
            outcome = TaskOutcome(family, "reused", None, f"from {plan.reused[family]}")
        elif family not in plan.needed:
            outcome = TaskOutcome(family, "not needed", None, "what needs it was reused")
        elif status == "FINISHED":
            outcome = TaskOutcome(family, "ran", seconds)
            done.add(family)
        elif status == "FAILED":
            outcome = TaskOutcome(family, "failed", seconds, f"see errors/{family}.txt")
        elif status in ("KILLED", "RUNNING"):
            outcome = TaskOutcome(family, "interrupted", seconds)
        elif {t.task_family for t in task.upstream()} <= done:
            outcome = TaskOutcome(family, "not run")
        else:
            outcome = TaskOutcome(family, "not run", None, "an upstream task failed")
        found.append(outcome)
    return found
