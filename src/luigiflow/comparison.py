"""A sweep's comparison of its children, in the parent run: a table of a row per child (its
swept values, status, verdict and metrics: `sweep/comparison.csv`), the winners on `select`
(the best finished child, and the best VALIDATED one, tagged on the parent), a plot per swept
key, and the same as a section of the parent's report and as the summary printed at the end.
"""

from __future__ import annotations

import html
import io
import tempfile
import time
from pathlib import Path

from luigiflow import sweep
from luigiflow.lifecycle import STARTED
from luigiflow.names import (
    REGISTRATION,
    SWEEP_BEST_CHILD_TAG,
    SWEEP_BEST_VALIDATED_CHILD_TAG,
    SWEEP_SELECT_TAG,
    VALIDATED,
    VALIDATION_TAG,
)
from luigiflow.runstate import SHARED
from luigiflow.sweep import Sweep
from luigiflow.targets import TaskFolder

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
    return value if isinstance(value, str | int | float | bool) else sweep.value_text(value)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for section, key in grid.axes:
        column = f"{section}.{key}"
        labels = [str(_cell(v)) for v in grid.axes[(section, key)]]
        position = {label: i for i, label in enumerate(labels)}
        x = [position[str(_cell(child.values[(section, key)]))] for child in children]
        figure, axes = plt.subplots(figsize=(5, 3.2))
        axes.scatter(x, table[grid.select], color="#1f77b4", zorder=3)
        means = table.assign(_x=x).groupby("_x")[grid.select].mean()
        axes.plot(means.index, means.values, color="#aaaaaa", zorder=2)
        axes.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
        axes.set_xlabel(column)
        axes.set_ylabel(grid.select)
        axes.set_title(f"{grid.select} by {column}")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        title = f"{grid.select}_by_{column}"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{title}.png"
            path.write_bytes(buffer.getvalue())
            client.log_artifact(parent_id, str(path), "sweep")
        plots.append((title, buffer.getvalue()))
    return plots


def report_html(grid, table, best, best_validated, plots, why_not) -> str:
    import base64

    lines = [f"<h2>Sweep: {html.escape(sweep.describe_axes(grid))}</h2>"]
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
        f"Sweep {status} in {seconds:.1f}s: {len(children)} runs, {sweep.describe_axes(grid)}",
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
