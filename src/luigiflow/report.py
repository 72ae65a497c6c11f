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


def summary(
    outcomes: list[TaskOutcome],
    status: str,
    run_url: str,
    log_hint: str = "",
    conclusions: Mapping[str, str] | None = None,
) -> str:
    """The end-of-run table a person reads, then what the tasks concluded."""
    width = max([len(o.task) for o in outcomes] + [4])
    lines = ["", f"Run {status}"]
    for o in outcomes:
        seconds = f"{o.seconds:6.1f}s" if o.seconds is not None else " " * 7
        detail = f"  {o.detail}" if o.detail else ""
        lines.append(f"  {o.task:<{width}}  {o.outcome:<16}{seconds}{detail}")
    for key, value in (conclusions or {}).items():
        if value:
            lines.append(f"  {key.replace('.', ' ').capitalize()}: {value}")
    lines.append(f"  MLflow: {run_url}")
    if log_hint:
        lines.append(f"  {log_hint}")
    return "\n".join(lines)


def outcomes(plan: Plan, tags: Mapping[str, str]) -> list[TaskOutcome]:
    """What became of each task, from the tags the tasks wrote on the run (in any process)."""
    from luigiflow.task import DURATION_TAG, STATUS_TAG

    found, done = [], set(plan.reused) | set(plan.copied)
    for task in plan.tasks:
        family = task.task_family
        status = tags.get(STATUS_TAG.format(family))
        seconds = tags.get(DURATION_TAG.format(family))
        seconds = float(seconds) if seconds else None
        if family in plan.reused or family in plan.copied:
            found.append(TaskOutcome(family, *_reuse(plan, family)))
            continue
        if family not in plan.needed:
            outcome = TaskOutcome(
                family, "skipped", None, f"not needed: {_covering(plan, task)} reused"
            )
        elif status == "FINISHED":
            outcome = TaskOutcome(family, "ran", seconds, plan.reasons.get(family, ""))
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


def _reuse(plan: Plan, family: str) -> tuple[str, None, str]:
    if family in plan.copied:
        return "copied", None, f"from {plan.copied[family]}"
    how = " (same fingerprint)" if family in plan.cached else " ([PathConfig])"
    return "reused", None, f"from {plan.reused[family]}{how}"


def _covering(plan: Plan, task) -> str:
    """The reused tasks that make `task` unnecessary (those that need it, directly or not)."""
    names = []
    for family in {**plan.reused, **plan.copied}:
        todo = list(plan.task(family).upstream())
        while todo:
            current = todo.pop()
            if current.task_family == task.task_family:
                names.append(family)
                break
            todo.extend(current.upstream())
    return " and ".join(sorted(names)) or "a downstream task"


def dry_run(plan: Plan) -> str:
    """The pipeline, and for each task whether it would run (and why) or be reused."""
    lines = [f"Dry run of {plan.root.task_family}: no task runs and no MLflow run is created."]
    width = max(len(t.task_family) for t in plan.tasks)
    for task in plan.tasks:
        family = task.task_family
        needs = ", ".join(dep.task_family for dep in task.upstream())
        if family in plan.cached:
            run_id = plan.reused[family].split("/")[1]
            verdict = f"would reuse from run {run_id} (same fingerprint)"
        elif family in plan.reused:
            verdict = f"complete: [PathConfig] {plan.reused[family]}"
        elif family not in plan.needed:
            verdict = f"not needed: {_covering(plan, task)} would be reused"
        else:
            verdict = f"would run: {plan.reasons.get(family, '')}"
        lines.append(f"  {family:<{width}}  {verdict}" + (f"   (needs {needs})" if needs else ""))
    return "\n".join(lines)
