"""A sweep: the grid of `[Sweep]` in luigi.toml and `--sweep` options, one child run per
combination. This module reads and checks the grid; each combination becomes `--set`
overrides of the experiment's own config, so a child is planned exactly as a plain run with
those values would be (and shares its cache).

Then the children are compared in the parent run: a table of a row per child (its swept
values, status, verdict and metrics: `sweep/comparison.csv`), the winners on `select` (the
best finished child, and the best VALIDATED one, tagged on the parent), a plot per swept key,
and the same as a section of the parent's report and as the summary printed at the end.
Running the parent and its children is `sweep_run`'s.
"""

from __future__ import annotations

import html
import itertools
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from luigiflow import cards
from luigiflow.config import ConfigError
from luigiflow.lifecycle import STARTED
from luigiflow.names import (
    REGISTRATION,
    SWEEP_BEST_CHILD_TAG,
    SWEEP_BEST_VALIDATED_CHILD_TAG,
    SWEEP_SELECT_TAG,
    VALIDATED,
    VALIDATION_TAG,
    better,
)
from luigiflow.runstate import SHARED
from luigiflow.targets import TaskFolder
from luigiflow.values import read_value
from luigiflow.values import toml_value as value_text

SECTION = "Sweep"
SETTINGS = {"select", "direction", "promote"}  # the [Sweep] keys that are not swept
DIRECTIONS = ("higher", "lower")
PROMOTIONS = ("better", "always")

Key = tuple[str, str]  # (task section, parameter)


@dataclass(frozen=True)
class Sweep:
    """The swept keys with their values (in the order written), and how the winner is picked:
    the metric `select`, better when `direction` says (by default, lower for an error such as
    `rmse`, higher otherwise), and whether the alias follows the winner only when it beats
    the alias's holder (`promote = "better"`) or always."""

    axes: dict[Key, list[object]] = field(default_factory=dict)
    select: str = ""
    direction: str = "higher"
    promote: str = "better"

    def combinations(self) -> list[dict[Key, object]]:
        """Every combination of the swept values; the last key varies fastest."""
        keys = list(self.axes)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(
            *self.axes.values()
        )]  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.axes)


def overrides(combination: Mapping[Key, object]) -> list[str]:
    """A combination as `--set` overrides (`Trainer.seed=1`), values written as TOML."""
    return [f"{section}.{key}={value_text(value)}" for (section, key), value in combination.items()]


def describe(combination: Mapping[Key, object]) -> str:
    """`Trainer.seed=1, Trainer.estimator="sklearn.svm.SVC"`: a child's name in the summary."""
    return ", ".join(overrides(combination))


def describe_axes(grid: Sweep) -> str:
    """`Trainer.seed in 0, 1; Trainer.alpha in 0.1, 1`: the grid in words."""
    return "; ".join(
        f"{section}.{key} in {', '.join(value_text(v) for v in values)}"
        for (section, key), values in grid.axes.items()
    )


def split_values(raw: str) -> list[str]:
    """Split `0,1,{C=1,max_iter=9},"a,b"` on its top-level commas only."""
    parts, depth, quote, current = [], 0, "", ""
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [part.strip() for part in parts]


def parse_option(text: str) -> tuple[Key, list[object]]:
    """`--sweep Section.key=v1,v2,...`: each value read as TOML, as `--set` reads one (a value
    that is not TOML, such as `sklearn.svm.SVC`, is taken as a string)."""
    name, eq, raw = text.partition("=")
    section, dot, key = name.strip().rpartition(".")
    if not eq or not dot or not section or not key or not raw.strip():
        raise ConfigError("--sweep", f"expected Section.key=value,value,..., got '{text}'")
    return (section, key), [read_value(part) for part in split_values(raw)]


def load(
    written: Mapping[str, object],
    options: Iterable[str],
    source: str,
    parameters: Mapping[str, Iterable[str]],
) -> Sweep:
    """The sweep of `[Sweep]` (as written in `source`) and `--sweep` options (which replace
    a key's values from the file). `parameters`: each task's parameter names. Raises
    ConfigError naming the key for an unknown task or parameter, an empty or repeated list of
    values, or a bad setting; whether each value suits its parameter is checked when each
    child's config is."""
    axes: dict[Key, list[object]] = {}
    where: dict[Key, str] = {}
    for name, values in written.items():
        if name in SETTINGS:
            continue
        section, dot, key = name.rpartition(".")
        if not dot or not section or not key:
            raise ConfigError(source, 'expected "Task.key" = [values]', SECTION, name)
        if not isinstance(values, list):
            raise ConfigError(source, "expected a list of values", SECTION, name)
        axes[(section, key)], where[(section, key)] = list(values), source
    for text in options:
        swept, values = parse_option(text)
        if where.get(swept) == "--sweep":  # one option per key, with all its values
            raise ConfigError(f"--sweep {'.'.join(swept)}", "given twice: give all its values once")
        axes[swept], where[swept] = values, "--sweep"
    _check_axes(axes, where, parameters)
    return Sweep(axes, **_settings(written, source))


def _check_axes(
    axes: Mapping[Key, list[object]],
    where: Mapping[Key, str],
    parameters: Mapping[str, Iterable[str]],
) -> None:
    for (section, key), values in axes.items():
        name = f"{section}.{key}"
        if section not in parameters:
            raise ConfigError(
                where[(section, key)], "unknown task", SECTION, name, choices=parameters,
                name=section,
            )  # fmt: skip
        known = list(parameters[section])
        if key not in known:
            raise ConfigError(
                where[(section, key)], "unknown key", SECTION, name, choices=known, name=key
            )
        if not values:
            raise ConfigError(where[(section, key)], "no values to sweep", SECTION, name)
        if len({value_text(v) for v in values}) < len(values):
            raise ConfigError(where[(section, key)], "a value is repeated", SECTION, name)


def _settings(written: Mapping[str, object], source: str) -> dict[str, str]:
    select = written.get("select", "")
    direction = written.get("direction") or better(str(select))  # rmse: lower, by default
    promote = written.get("promote", "better")
    if not isinstance(select, str):
        raise ConfigError(source, "expected the name of a metric", SECTION, "select")
    if direction not in DIRECTIONS:
        raise ConfigError(source, 'expected "higher" or "lower"', SECTION, "direction")
    if promote not in PROMOTIONS:
        raise ConfigError(source, 'expected "better" or "always"', SECTION, "promote")
    return {"select": select, "direction": str(direction), "promote": str(promote)}


# The comparison of the children ---------------------------------------------------------
COMPARISON = "sweep/comparison.csv"


def table(client, grid: Sweep, children: list):
    """A row per child: its swept values, status, verdict and metrics (`select` first)."""
    import pandas as pd

    rows = []
    for child in children:
        run = client.get_run(child.run_id) if child.run_id else None  # interrupted before
        metrics = run.data.metrics if run else {}
        rows.append(
            {
                "child": child.number,
                "run_id": child.run_id,
                **{f"{s}.{k}": _cell(value) for (s, k), value in child.values.items()},
                "status": child.status,
                "validation": run.data.tags.get(VALIDATION_TAG, "") if run else "",
                **{m: metrics[m] for m in sorted(metrics, key=lambda m: (m != grid.select, m))},
            }
        )
    return pd.DataFrame(rows)


def winners(table, grid: Sweep) -> tuple[dict | None, dict | None]:
    """The best finished child on `select`, and the best VALIDATED one (rows, or None)."""
    if grid.select not in table:
        return None, None
    finished = table[(table["status"] == "FINISHED") & table[grid.select].notna()]
    ranked = finished.sort_values(grid.select, ascending=grid.direction == "lower", kind="stable")
    validated = ranked[ranked["validation"] == VALIDATED]
    best = ranked.iloc[0].to_dict() if len(ranked) else None
    return best, (validated.iloc[0].to_dict() if len(validated) else None)


def columns(grid: Sweep) -> list[str]:
    """The columns every comparison has: child, swept values, status, verdict."""
    return ["child", *(f"{s}.{k}" for s, k in grid.axes), "status", "validation"]


def empty(grid: Sweep):
    """The comparison of a sweep whose children could not be compared."""
    import pandas as pd

    return pd.DataFrame(columns=columns(grid))


def _cell(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) else value_text(value)


def winner_tags(grid: Sweep, best: dict | None, best_validated: dict | None) -> list:
    from mlflow.entities import RunTag

    tags = {
        SWEEP_SELECT_TAG: f"{grid.select} ({grid.direction} is better)",
        SWEEP_BEST_CHILD_TAG: best["run_id"] if best else "none",
        SWEEP_BEST_VALIDATED_CHILD_TAG: best_validated["run_id"] if best_validated else "none",
    }
    return [RunTag(k, v) for k, v in tags.items()]


def plot(client, parent_id: str, grid: Sweep, table, children) -> list[tuple[str, bytes]]:
    """A plot of `select` against each swept key (every child a point, the mean a line),
    logged under `sweep/`; returned as (title, PNG) for the report."""
    if grid.select not in table:
        return []
    plots = []
    for section, key in grid.axes:
        labels = [str(_cell(v)) for v in grid.axes[(section, key)]]
        x = [labels.index(str(_cell(child.values[(section, key)]))) for child in children]
        png = cards.point_plot(x, labels, list(table[grid.select]), f"{section}.{key}", grid.select)
        title = f"{grid.select}_by_{section}.{key}"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{title}.png"
            path.write_bytes(png)
            client.log_artifact(parent_id, str(path), "sweep")
        plots.append((title, png))
    return plots


def report_html(grid, table, best, best_validated, plots, why_not) -> str:
    import base64

    lines = [f"<h2>Sweep: {html.escape(describe_axes(grid))}</h2>"]
    lines.append(
        f"<p>Picked by <b>{html.escape(grid.select)}</b> ({grid.direction} is better). "
        f"Best: {html.escape(_name(best))}; best validated: {html.escape(_name(best_validated))}."
        + (f" {html.escape(why_not)}." if why_not else "")
        + "</p>"
    )
    lines.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    for title, png in plots:
        data = base64.b64encode(png).decode()
        lines.append(f"<p><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'></p>")
    return "".join(lines)


def _name(row: dict | None) -> str:
    if row is None:
        return "none"
    return f"child {row['child']} (run {row['run_id']})"


def summary(grid, children, table, best, best_validated, status, found, why_not) -> str:
    """What a person reads at the end of a sweep: a line per child, what was made once for
    several children, failures, the winners and what became of the registration."""
    seconds = time.monotonic() - STARTED
    lines = [
        "",
        f"Sweep {status} in {seconds:.1f}s: {len(children)} runs, {describe_axes(grid)}",
    ]
    lines += [f"  {line}" for line in _table_text(table, grid)]
    made_once = _made_once(children)
    if made_once:
        lines.append(f"  Made once and shared: {made_once}")
    for child in children:
        if child.found.get("failed"):
            lines.append(f"  Child {child.number} failed: {child.found['failed']}")
    if grid.select not in table:
        lines.append(f"  No child logged the metric '{grid.select}' ([Sweep] select)")
    elif best is not None:
        text = f"  Best on {grid.select}: child {best['child']} ({best[grid.select]:.4f}"
        text += f", {best['validation']})" if best["validation"] else ")"
        if best_validated is None:
            text += "; no child was VALIDATED"
        elif best_validated["child"] != best["child"]:
            text += f"; best VALIDATED: child {best_validated['child']}"
        lines.append(text)
    if why_not:
        lines.append(f"  Registration: {why_not}")
    elif found.get(REGISTRATION):
        lines.append(f"  Registration: {found[REGISTRATION]}")
    return "\n".join(lines)


def _table_text(table, grid: Sweep) -> list[str]:
    """The comparison as aligned text: child, swept values, status, verdict, `select`."""
    shown = columns(grid) + ([grid.select] if grid.select in table else [])
    rows = [shown] + [
        [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
        for row in table[shown].itertuples(index=False)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _made_once(children: list) -> str:
    """`Preprocessor, Splitter (by child 1)`: the tasks a child made for others too."""
    number = {child.run_id: child.number for child in children}
    makers: dict[str, set[int]] = {}
    for child in children:
        for family, entry in child.plan.context.decided(SHARED).items():
            run_id = TaskFolder.from_source(str(entry.source)).run_id
            makers.setdefault(family, set()).add(number.get(run_id, 0))
    groups: dict[str, list[str]] = {}
    for family, by in makers.items():
        who = ", ".join(str(n) for n in sorted(by))
        groups.setdefault(f"child {who}" if len(by) == 1 else f"children {who}", []).append(family)
    return "; ".join(f"{', '.join(families)} (by {who})" for who, families in groups.items())
