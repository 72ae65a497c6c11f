"""A sweep's runs: a parent run, one child run per combination, built together, compared.

Every child is planned before any run exists, each exactly as a plain run with its values
would be, so a bad value in any combination is exit 2 and no run. A task whose fingerprint an
earlier child plans to run is shared: the later child requires that child's task, so Luigi
runs it once and both wait for it. All children are built in one Luigi build, side by side
with `--workers N`; a child that fails does not stop the others. Tasks that publish outside
the run (`publishes`: Register) are deferred in the children. Once every child has ended, the
parent compares them (see `comparison`) and, if every
child finished, runs those tasks once, for the best VALIDATED child: at most one new registered
version per sweep, and the alias moves to it only if it beats the alias's holder on `select`
(or always, with `promote = "always"`).

Exit status: 0 when every child finished (the parent FINISHED); 1 when a child failed (the
parent FAILED, nothing registered); 3 with --require-validated when no child was VALIDATED;
2, 130 and 143 as for a plain run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from luigiflow import sweep, tracking, worker
from luigiflow.attempt import DURATION_METRIC
from luigiflow.config import SWEEP_SECTION, Config, ConfigError
from luigiflow.lifecycle import exit_code, finish, live, open_experiment
from luigiflow.names import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SWEEP_CHILD_TAG, SWEEP_TAG
from luigiflow.plan import CacheOptions, Plan, SweepChild, make_plan
from luigiflow.redact import Redactor
from luigiflow.report import dry_run, say_before_run
from luigiflow.runstate import DEFERRED, RUN, SHARED, RunContext
from luigiflow.settings import Settings
from luigiflow.store import Ending
from luigiflow.sweep import Sweep
from luigiflow.targets import TaskFolder
from luigiflow.terminal import fit, shown
from luigiflow.worker import USAGE_ERRORS


@dataclass
class Child:
    """One combination of the sweep: its config, its plan and, once created, its run."""

    number: int
    values: dict[sweep.Key, object]
    config: Config
    plan: Plan
    run_id: str = ""
    url: str = ""
    status: str = "FAILED"
    found: dict[str, str] = field(default_factory=dict)  # what its ending concluded

    @property
    def label(self) -> str:
        return sweep.describe(self.values)

    @property
    def placeholder(self) -> str:
        """Its run id until the run exists (the plans of later children name it)."""
        return f"{self.number:032x}"


def run(
    args,
    settings: Settings,
    task_classes,
    grid: Sweep,
    child_config: Callable[[list[str]], Config],
    options: CacheOptions,
    client,
    redactor: Redactor,
    log_path: Path,
) -> int:
    """Plan every child, then create the parent and the children, build, compare, register."""
    try:
        children = plan_children(grid, child_config, task_classes, settings, options)
        where = children[0].config.source(SWEEP_SECTION, "select")
        check_select(grid.select, where, [child.plan for child in children])
        say_before_run(children[0].plan)
        if args.dry_run:
            print(describe_dry_run(grid, children))
            return EXIT_OK
        experiment = open_experiment(client, settings, children[0].config, None)
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    runs = SweepRuns(
        args, settings, task_classes, grid, child_config, client, redactor, log_path, children,
        experiment, options,
    )  # fmt: skip
    return live(runs, client, redactor)


def check_select(select: str, source: str, plans: list[Plan]) -> None:
    """`[Sweep] select` must name a metric some task of the plans logs for this problem type,
    or every child would run and none could be compared (checked in a plain run too)."""
    if not select:
        message = 'name the metric that picks the best child, e.g. select = "cv_accuracy"'
        raise ConfigError(source, message, SWEEP_SECTION, "select")
    tasks = [task for plan in plans for task in plan.tasks]
    logged = {n for t in tasks for n in (*t.metric_names(), f"{DURATION_METRIC}/{t.task_family}")}
    if select not in logged:
        problem = f" for a {plans[0].dataset.problem_type} problem" if plans[0].dataset else ""
        raise ConfigError(
            source, f"no task logs '{select}'{problem}", SWEEP_SECTION, "select",
            choices=sorted(logged), name=select,
        )  # fmt: skip


@dataclass
class SweepRuns:
    """A planned sweep's runs through `live`: the parent, then its children, built together."""

    args: Any
    settings: Settings
    task_classes: Any
    grid: Sweep
    child_config: Callable[[list[str]], Config]
    client: Any
    redactor: Redactor
    log_path: Path
    children: list[Child]
    experiment: Any
    options: CacheOptions
    parent_id: str = ""
    parent_url: str = ""

    def open(self) -> None:
        """The parent, then every child."""
        settings, children = self.settings, self.children
        self.parent_id = _start_parent(
            self.client, self.experiment, self.grid, children, self.redactor, settings
        )
        self.parent_url = self._url(self.parent_id)
        root, name = children[0].plan.root, self.experiment.name
        print(f"Run {self.parent_id} started: a sweep of {len(children)} runs of {root} in "
              f"experiment '{name}'", flush=True)  # fmt: skip
        for child in children:
            self._start_child(child)

    def opened(self) -> list[str]:
        """The runs created so far: the parent first."""
        return [r for r in [self.parent_id, *(c.run_id for c in self.children)] if r]

    def build(self) -> bool:
        """One build of every child: True when every child finished."""
        for child in self.children:
            worker.attach(child.run_id, self.task_classes)
        built = worker.build_sweep(
            [c.run_id for c in self.children], self.task_classes, self.args.workers,
            self.settings.scheduler_url,
        )  # fmt: skip
        for child in self.children:
            child.status = "FINISHED" if built[child.run_id] else "FAILED"
        return all(built.values())

    def end(self, status: str, code: int, ending: Ending) -> int:
        """End every child, then the parent (by the same `ending`, one deadline)."""
        for child in self.children:
            child.status = child.status if status != "KILLED" else "KILLED"
            if child.run_id:
                child.found = finish(
                    self.client, child.run_id, child.status, child.plan, self.log_path,
                    child.url, say=False, ending=ending,
                )  # fmt: skip
        if any(child.found.get("problems") for child in self.children):
            code = EXIT_FAILED if code == EXIT_OK else code
        return self._end_parent(status, code, ending)

    def _url(self, run_id: str) -> str:
        return tracking.run_url(
            self.settings.tracking_uri, self.experiment.experiment_id, run_id, self.settings.ui_url
        )

    def _start_child(self, child: Child) -> None:
        """A child run, nested under the parent in the MLflow UI, named after its values;
        the tasks it shares point at the children that make them, now that their runs
        exist."""
        for entry in child.plan.context.decided(SHARED).values():
            folder = TaskFolder.from_source(str(entry.source))
            maker = next(c for c in self.children if c.placeholder == folder.run_id)
            entry.source = f"runs:/{maker.run_id}/{folder.name}"
        config = child.config
        config.run["run_name"] = f"{config.run.get('run_name') or ''} {child.label}".strip()
        config.run["tags"] = {
            **dict(config.run.get("tags") or {}),
            "mlflow.parentRunId": self.parent_id,
            SWEEP_CHILD_TAG: child.label,
        }
        child.run_id = tracking.start_run(
            self.client, self.experiment.experiment_id, config, child.plan.context,
            self.redactor, self.settings.project_root, sys.argv,
        )  # fmt: skip
        outputs = {task.task_family: task.outputs for task in child.plan.tasks}
        tracking.prepare(
            self.client, child.run_id, child.plan.context, outputs, self.settings.tracking_uri,
            self.settings.ui_url,
        )  # fmt: skip
        child.url = self._url(child.run_id)
        print(fit(f"  child {child.number}: run {child.run_id} ({child.label})"), flush=True)

    def _end_parent(self, status: str, code: int, ending: Ending) -> int:
        """Compare the children; register the winner if every child finished; end the
        parent."""
        client, grid, children = self.client, self.grid, self.children
        first = children[0].plan
        plan = Plan([], RunContext(first.root, first.context.input, {}, {}))
        table, best, best_validated, plots, why_not = None, None, None, [], None
        try:
            table = sweep.table(client, grid, children)
            best, best_validated = sweep.winners(table, grid)
            tags = sweep.winner_tags(grid, best, best_validated)
            client.log_batch(self.parent_id, tags=tags)
            client.log_text(self.parent_id, table.to_csv(index=False), sweep.COMPARISON)
            plots = sweep.plot(client, self.parent_id, grid, table, children)
            why_not = _why_not_register(status, children, table, grid, best_validated)
            if why_not == "":
                winner = next(c for c in children if c.run_id == best_validated["run_id"])
                plan, registered = self._register(winner, best_validated[grid.select])
                status, code = (status, code) if registered else ("FAILED", EXIT_FAILED)
        except Exception as error:  # the parent is ended all the same, FAILED
            text = self.redactor.text(traceback.format_exc())
            logging.error("the sweep could not be concluded:\n%s", text)
            print(f"error: the sweep could not be concluded: {error}", file=sys.stderr)
            with contextlib.suppress(Exception):
                client.log_text(self.parent_id, text, "errors/runner.txt")
            status, code = "FAILED", EXIT_FAILED if code == EXIT_OK else code
        table = sweep.empty(grid) if table is None else table
        extra = sweep.report_html(grid, table, best, best_validated, plots, why_not)
        found = finish(
            client, self.parent_id, status, plan, self.log_path, self.parent_url, extra=extra,
            say=False, ending=ending,
        )  # fmt: skip
        said = sweep.summary(grid, children, table, best, best_validated, status, found, why_not)
        print(f"{fit(said)}\n  MLflow: {self.parent_url}\n  Log: {shown(self.log_path)}")
        return exit_code(code, found, self.args.require_validated and best_validated is None)

    def _register(self, winner: Child, value: float) -> tuple[Plan, bool]:
        """The deferred tasks, run in the parent for the winner, on the winner's outputs
        (found by fingerprint like any cached output); True when they finished."""
        config = self.child_config(sweep.overrides(winner.values))  # the winner's
        family = _deferred([winner])[-1]
        # Forced by the user, it says so as any forced task does; else it runs for the winner.
        because = self.options.forced_because if family in self.options.force else "for the winner"
        options = replace(self.options, enabled=True, force=frozenset({family}), copy=False,
                          forced_because=because)  # fmt: skip
        plan = make_plan(self.task_classes[family], config, self.settings, options)
        plan.context.promotion = {
            "metric": self.grid.select, "direction": self.grid.direction,
            "promote": self.grid.promote, "value": float(value),
        }  # fmt: skip
        plan.context.label = f"winner: {winner.label}"
        plan.context.save(self.parent_id)
        worker.attach(self.parent_id, self.task_classes)
        return plan, worker.build(self.parent_id, plan.context, self.task_classes)


def plan_children(
    grid: Sweep,
    child_config: Callable[[list[str]], Config],
    task_classes,
    settings: Settings,
    options: CacheOptions,
) -> list[Child]:
    """Every child's plan, in order; each knows which tasks earlier children make."""
    children: list[Child] = []
    shared: dict[str, tuple[str, str]] = {}  # fingerprint digest -> its maker
    for number, values in enumerate(grid.combinations(), start=1):
        config = child_config(sweep.overrides(values))
        plan = make_plan(
            task_classes[config.task], config, settings, options, SweepChild(dict(shared))
        )
        child = Child(number, values, config, plan)
        plan.context.label = child.label
        root = plan.context.tasks[plan.root]
        if root.decision == SHARED:  # nothing it builds differs from an earlier child
            raise ConfigError(
                config.path,
                f"child {number} ({child.label}) builds exactly what "
                f"{root.reason.removeprefix('made once for the sweep, by ')} builds: "
                "a swept value that changes nothing in the pipeline",
                SWEEP_SECTION,
            )
        for family, entry in plan.context.decided(RUN).items():
            maker = (f"runs:/{child.placeholder}/{family}", f"child {number} ({child.label})")
            shared.setdefault(entry.digest, maker)
        children.append(child)
    return children


def describe_dry_run(grid: Sweep, children: list[Child]) -> str:
    blocks = [f"Dry run of a sweep of {len(children)} runs: {sweep.describe_axes(grid)}"]
    for child in children:
        blocks.append(f"\nChild {child.number}: {child.label}")
        blocks.append(dry_run(child.plan).split("\n", 1)[1])  # without its own headline
    return "\n".join(blocks)


def _start_parent(client, experiment, grid: Sweep, children, redactor, settings) -> str:
    """The parent: the first child's config with the [Sweep] section that makes the others
    (so `--from-run <parent>` runs the whole sweep again)."""
    first = children[0]
    resolved = {name: dict(values) for name, values in first.plan.context.config.items()}
    resolved[SWEEP_SECTION] = {
        **{f"{section}.{key}": values for (section, key), values in grid.axes.items()},
        "select": grid.select,
        "direction": grid.direction,
        "promote": grid.promote,
    }
    tags = {
        **dict(first.config.run.get("tags") or {}),
        SWEEP_TAG: sweep.describe_axes(grid),
    }
    config = replace(first.config, run={**first.config.run, "tags": tags})
    return tracking.start_sweep(
        client, experiment.experiment_id, config, resolved, redactor, settings.project_root,
        sys.argv,
    )  # fmt: skip


def _deferred(children: list[Child]) -> list[str]:
    """The tasks the children left to the parent (the same in every child), upstream first."""
    return [f for f, e in children[0].plan.context.tasks.items() if e.decision == DEFERRED]


def _why_not_register(status: str, children: list[Child], table, grid, best_validated):
    """None when nothing in the pipeline registers; "" when the winner is registered; else
    why nothing is."""
    if not _deferred(children):
        return None
    if status != "FINISHED" or any(c.status != "FINISHED" for c in children):
        return "a child did not finish: nothing is registered and the alias stays"
    if grid.select not in table:
        return f"no child logged '{grid.select}' ([Sweep] select): nothing is registered"
    if best_validated is None:
        return "no child was VALIDATED: nothing is registered and the alias stays"
    return ""
