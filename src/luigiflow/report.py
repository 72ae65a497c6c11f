"""What a person reads once a run ends: the summary, what the tasks concluded, and report.html.

The summary and the report are built from the run context (what the plan decided) and the
per-task records (what happened), wherever those tasks ran. Progress while tasks run is
`terminal`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from luigiflow.cards import run_report
from luigiflow.names import CONCLUSION_TAG, REPORT_ARTIFACT
from luigiflow.plan import Plan
from luigiflow.runstate import (
    COPIED,
    DEFERRED,
    FAILED,
    FINISHED,
    REUSED,
    SHARED,
    SKIPPED,
    RunContext,
    TaskPlan,
    TaskRecord,
)
from luigiflow.targets import TaskFolder
from luigiflow.terminal import CLEAR, fit, progress_mode


@dataclass
class TaskOutcome:
    task: str
    outcome: str  # ran, reused, copied, skipped, failed, interrupted, not run; finished,
    # unknown (the store could not say)
    seconds: float | None = None
    detail: str = ""
    attempts: int = 1


def summary(
    outcomes: list[TaskOutcome],
    status: str,
    run_url: str,
    log_hint: str = "",
    conclusions: Mapping[str, str] | None = None,
    mode: str = "",
) -> str:
    """The end-of-run table a person reads, then what the tasks concluded. In a log (not a
    terminal), the tasks that ran were shown as they finished: the table leaves them out
    (unless it took more than one attempt).
    `mode`: as `progress_mode` (the default) says."""
    mode = mode or progress_mode()
    shown = [o for o in outcomes if mode != "tasks" or o.outcome != "ran" or o.attempts > 1]
    width = max([len(o.task) for o in outcomes] + [4])
    lines = [CLEAR if mode == "line" else "", f"Run {status}"]
    for o in shown:
        seconds = f"{o.seconds:6.1f}s" if o.seconds is not None else " " * 7
        detail = f"  {o.detail}" if o.detail else ""
        lines.append(fit(f"  {o.task:<{width}}  {o.outcome:<16}{seconds}{detail}"))
    for key, value in (conclusions or {}).items():
        if value:
            lines.append(f"  {key.replace('.', ' ').capitalize()}: {value}")
    lines.append(f"  MLflow: {run_url}")
    if log_hint:
        lines.append(f"  {log_hint}")
    return "\n".join(lines)


def outcomes(
    context: RunContext,
    records: Mapping[str, TaskRecord],
    earlier: Collection[str] = frozenset(),
    unknown: Collection[str] = frozenset(),
    interrupted: bool = False,
) -> list[TaskOutcome]:
    """What became of each task: the plan's decision, and the record of a task that ran
    (`earlier`: tasks that finished in an earlier attempt of a resumed run). `unknown`: tasks
    whose record the store could not give; among them, those in `records` are known from
    this process's own records, and the others are "unknown", never "not run". In a run that
    was `interrupted`, what did not run says so, not that something failed."""
    found, done = [], set()
    for family, entry in context.tasks.items():
        outcome = _decided(context, entry) or _ran(entry, records.get(family), family in earlier)
        if family in unknown and (outcome is None or outcome.outcome == "ran"):
            outcome = _unread(family, outcome, family in earlier)
        if outcome is None:
            stopped = "the run was interrupted" if interrupted else "an upstream task failed"
            detail = "" if set(entry.upstream) <= done else stopped
            outcome = TaskOutcome(family, "not run", None, detail)
        if outcome.outcome in ("reused", "copied", "ran", "kept", "shared", "deferred", "finished"):
            done.add(family)
        found.append(outcome)
    return found


def _unread(family: str, known: TaskOutcome | None, earlier: bool) -> TaskOutcome:
    """A task whose record the store could not give: "finished" when this process recorded
    it finished (or "kept", finished in an earlier attempt), else "unknown": it may have run
    elsewhere, or not at all."""
    if earlier:
        return TaskOutcome(family, "kept", None, "finished in an earlier attempt")
    if known is None:
        return TaskOutcome(family, "unknown", None, "the store did not say")
    return TaskOutcome(family, "finished", known.seconds, "recorded here; the store did not say")


def _decided(context: RunContext, entry: TaskPlan) -> TaskOutcome | None:
    """The outcome the plan decided (reused, copied, skipped), or None for a task to run."""
    if entry.decision == REUSED:
        how = " (same fingerprint)" if entry.cached else " ([PathConfig])"
        return TaskOutcome(entry.family, "reused", None, f"from {entry.source}{how}")
    if entry.decision == COPIED:
        return TaskOutcome(entry.family, "copied", None, f"from {entry.source}")
    if entry.decision == SKIPPED:
        detail = f"not needed: {covering(context, entry.family)} reused"
        return TaskOutcome(entry.family, "skipped", None, detail)
    if entry.decision == DEFERRED:
        return TaskOutcome(entry.family, "deferred", None, entry.reason)
    return None


def _ran(entry: TaskPlan, record: TaskRecord | None, earlier: bool) -> TaskOutcome | None:
    """The outcome of a task that was to run, from its record; None if it never started."""
    if record is None:
        return None
    family, seconds = entry.family, record.duration_s
    if entry.decision == SHARED:  # the record of the child that made it
        outcome = "shared" if record.status == FINISHED else record.status.lower()
        return TaskOutcome(family, outcome, None, f"{entry.reason} ({entry.source})")
    if record.status == FINISHED and earlier:
        return TaskOutcome(family, "kept", seconds, "finished in an earlier attempt")
    if record.status == FINISHED:
        tries = f" (attempt {len(record.attempts)})" if len(record.attempts) > 1 else ""
        return TaskOutcome(
            family, "ran", seconds, entry.reason + tries, max(1, len(record.attempts))
        )
    if record.status == FAILED:
        detail = f"{record.error}; see errors/{family}.txt".lstrip("; ")
        return TaskOutcome(family, "failed", seconds, detail)
    return TaskOutcome(family, "interrupted", seconds)


def covering(context: RunContext, family: str) -> str:
    """The reused tasks that make `family` unnecessary (those that need it, directly or not)."""
    names = []
    for reused, entry in context.tasks.items():
        if entry.decision not in (REUSED, COPIED):
            continue
        todo = list(entry.upstream)
        while todo:
            current = todo.pop()
            if current == family:
                names.append(reused)
                break
            todo.extend(context.tasks[current].upstream)
    return " and ".join(sorted(names)) or "a downstream task"


def say_before_run(plan: Plan) -> None:
    """What the plan found worth saying before anything runs (the dry run says it too): what
    it inferred of `[Dataset]`, which the run records among its params, and its notes."""
    if plan.dataset is not None and plan.dataset.inferred:
        print(f"Dataset: {plan.dataset.describe()}", flush=True)
    for note in plan.notes:
        print(f"note: {note}", flush=True)


def dry_run(plan: Plan) -> str:
    """The pipeline, and for each task whether it would run (and why) or be reused."""
    context = plan.context
    lines = [f"Dry run of {context.root}: no task runs and no MLflow run is created."]
    width = max(len(family) for family in context.tasks)
    for family, entry in context.tasks.items():
        needs = ", ".join(entry.upstream)
        if entry.decision in (REUSED, COPIED) and entry.cached:
            run_id = str(entry.source).split("/")[1]
            verdict = f"would reuse from run {run_id} (same fingerprint)"
        elif entry.decision in (REUSED, COPIED):
            verdict = f"complete: [PathConfig] {entry.source}"
        elif entry.decision == SKIPPED:
            verdict = f"not needed: {covering(context, family)} would be reused"
        elif entry.decision == SHARED:
            verdict = f"would be {entry.reason}"
        elif entry.decision == DEFERRED:
            verdict = f"deferred: {entry.reason}"
        else:
            verdict = f"would run: {entry.reason}"
        lines.append(f"  {family:<{width}}  {verdict}" + (f"   (needs {needs})" if needs else ""))
    return "\n".join(lines)


def conclude(
    client: Any,
    run: Any,
    plan: Plan,
    task_outcomes: Iterable[TaskOutcome],
    url: str,
    extra: str = "",
) -> dict[str, str]:
    """Each task's conclusions, tagged on the run, and the run's report (report.html, with
    `extra` HTML before the tasks: a sweep's comparison). Returns the conclusions
    (`validation`, `registration`, ...)."""
    from mlflow.entities import Metric, RunTag

    run_id, tags = run.info.run_id, run.data.tags
    folders: dict[str, TaskFolder | None] = {}
    found: dict[str, str] = {}
    metrics: dict[str, float] = {}  # of outputs made by another run: logged on this one too
    for task in plan.tasks:
        folder = plan.context.folder(task.task_family, run_id)
        manifest = folder.manifest()
        folders[task.task_family] = folder if manifest is not None else None
        if manifest is None:
            continue
        if manifest.get("run_id") != run_id:
            metrics.update(manifest.get("metrics", {}))
        try:
            found.update(task.clone(run_id=run_id).conclusions())
        except Exception:  # a conclusion that cannot be drawn is not a failed run
            logging.exception("could not draw the conclusions of %s", task.task_family)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(CONCLUSION_TAG.format(k), v) for k, v in found.items() if v],
    )
    facts = {
        "run": f"{run.info.run_name} ({run_id})",
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000)),
        "description": tags.get("mlflow.note.content", ""),
        "git commit": tags.get("mlflow.source.git.commit", ""),
        **found,
        "MLflow": url,
    }
    title = f"Run report: {plan.root} in {facts['experiment']}"
    page = run_report(title, facts, task_outcomes, folders, extra)
    client.log_text(run_id, page, REPORT_ARTIFACT)
    return found
