"""Cards: a page per task, and the run's HTML report stitched from them.

A task's card is written with its outputs (`_card.html` in its folder), while the tables it
saved are still in memory: parameters, each output with its schema, a data profile and first
rows, images inline, and whatever sections the task added (`add_to_card`). A reused task brings
its card along, so the report of a run that reused everything recomputes nothing.

Everything is inline (styles, PNGs as data URIs, histograms as SVG, no script): the report
opens offline, from disk or in MLflow's artifact view.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from luigiflow.names import CARD
from luigiflow.store import write_atomic

if TYPE_CHECKING:
    import pandas as pd

    from luigiflow.targets import TaskFolder

PROFILE_SAMPLE = 10_000  # rows for distinct counts and histograms; missing values use all rows
FIRST_ROWS = 5

__all__ = ["CARD", "profile", "run_report", "write_card"]

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.pass{color:#17762d;font-weight:600}.fail{color:#b3261e;font-weight:600}
.muted{color:#777}code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow:auto}
nav a{margin-right:1em}img{max-width:480px;border:1px solid #eee;margin:.3em .6em .3em 0}
"""


def profile(table: pd.DataFrame) -> str:
    """Shape, per-column type, missing values, distinct values, summary and distribution, and
    the first rows of a table, as HTML. A table it cannot profile never fails the task."""
    try:
        return _profile(table)
    except Exception as error:
        logging.getLogger(__name__).exception("could not profile a table")
        return f"<p class=muted>No profile: {html.escape(repr(error))}</p>"


def _profile(table: pd.DataFrame) -> str:
    import pandas as pd

    sample = table.sample(PROFILE_SAMPLE, random_state=0) if len(table) > PROFILE_SAMPLE else table
    missing = table.isna().sum()
    rows = []
    for column in table.columns:
        values = sample[column].dropna()
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and len(values):
            summary = (
                f"min {values.min():.4g} · median {values.median():.4g} · max {values.max():.4g}"
            )
        elif len(values):
            top = values.astype(str).value_counts()
            summary = f"most frequent: {top.index[0]} ({top.iloc[0]})"
        else:
            summary = ""
        share = missing[column] / len(table) if len(table) else 0
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{cell}</td>"
                for cell in (
                    f"<code>{html.escape(str(column))}</code>",
                    html.escape(str(table[column].dtype)),
                    f"{missing[column]:,} ({share:.1%})",
                    f"{values.nunique():,}" + ("+" if len(sample) < len(table) else ""),
                    html.escape(summary),
                    _histogram(values, numeric),
                )
            )
            + "</tr>"
        )
    note = f" (distinct values and distributions from {len(sample):,} sampled rows)"
    return (
        f"<p>{len(table):,} rows × {len(table.columns)} columns"
        f"{note if len(sample) < len(table) else ''}</p>"
        "<table><tr><th>column</th><th>type</th><th>missing</th><th>distinct</th>"
        f"<th>summary</th><th>distribution</th></tr>{''.join(rows)}</table>"
        f"<h3>First {FIRST_ROWS} rows</h3>{_table(table.head(FIRST_ROWS))}"
    )


def write_card(
    path: Path,
    params: Mapping[str, str],
    outputs: Mapping[str, str],
    profiles: Mapping[str, str],
    sections: Iterable[tuple[str, Any]],
) -> None:
    """A task's card, written next to its outputs before the manifest: its parameters, each
    output (a table's profile made while it was in memory, else the file rendered) and the
    sections the task added. A card that cannot be made says why instead: the report is never
    a reason for a task to fail."""
    try:
        parts = [_params(params)]
        for name, filename in outputs.items():
            heading = f"<h3>Output <code>{html.escape(name)}</code>: {html.escape(filename)}</h3>"
            parts += [heading, profiles.get(name) or _render_file(path.parent / filename)]
        for title, content in sections:
            parts.append(f"<h3>{html.escape(title)}</h3>{_content(content)}")
        text = "\n".join(parts)
    except Exception as error:
        logging.getLogger(__name__).exception("could not make the card of %s", path.parent.name)
        text = f"<p class=muted>No card: {html.escape(repr(error))}</p>"
    write_atomic(path, text)


class Outcome(Protocol):
    """What became of a task (the report's TaskOutcome): anything with these attributes."""

    task: str
    outcome: str
    seconds: float | None
    detail: str


def run_report(
    title: str,
    facts: Mapping[str, str],
    outcomes: Iterable[Outcome],
    folders: Mapping[str, TaskFolder | None],
    extra: str = "",
) -> str:
    """One self-contained page: the run's facts, `extra` (HTML), what became of each task,
    and each card."""
    outcomes = list(outcomes)
    overview = "".join(
        f"<tr><td><a href='#{o.task}'>{o.task}</a></td><td>{html.escape(o.outcome)}</td>"
        f"<td>{'' if o.seconds is None else f'{o.seconds:.1f} s'}</td>"
        f"<td>{html.escape(o.detail)}</td></tr>"
        for o in outcomes
    )
    sections = []
    for o in outcomes:
        folder = folders.get(o.task)
        card = folder.fetch_optional(CARD) if folder is not None else None
        where = f" · outputs in <code>{html.escape(repr(folder))}</code>" if folder else ""
        body = card.read_text() if card else "<p class=muted>No outputs in this run.</p>"
        sections.append(
            f"<section id='{o.task}'><h2>{o.task}</h2>"
            f"<p><b>{html.escape(o.outcome)}</b> {html.escape(o.detail)}{where}</p>{body}</section>"
        )
    facts_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in facts.items() if v
    )
    nav = "".join(f"<a href='#{o.task}'>{o.task}</a>" for o in outcomes)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{facts_rows}</table><nav>{nav}</nav>{extra}"
        "<h2>Tasks</h2><table><tr><th>task</th><th>outcome</th><th>duration</th><th>detail</th>"
        f"</tr>{overview}</table>{''.join(sections)}</body></html>"
    )


def _params(params: Mapping[str, str]) -> str:
    if not params:
        return "<p class=muted>No parameters.</p>"
    rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(v)}</td></tr>"
        for k, v in params.items()
    )
    return f"<h3>Parameters</h3><table>{rows}</table>"


def _render_file(path: Path) -> str:
    """An output the task wrote itself: a picture, a model's signature, JSON, or its size."""
    if path.suffix == ".png":
        data = base64.b64encode(path.read_bytes()).decode()
        return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"
    if path.is_dir() and (path / "MLmodel").is_file():
        from mlflow.models import Model

        signature = Model.load(str(path)).signature
        if signature is None:
            return "<p>An MLflow model without a signature.</p>"
        inputs = "".join(
            f"<tr><td><code>{html.escape(str(c.get('name', '')))}</code></td>"
            f"<td>{html.escape(str(c.get('type', '')))}</td></tr>"
            for c in signature.inputs.to_dict()
        )
        return (
            "<p>An MLflow model (pyfunc); it takes rows with these columns "
            "(others are ignored):</p>"
            f"<table><tr><th>input</th><th>type</th></tr>{inputs}</table>"
            f"<p>Output: <code>{html.escape(str(signature.outputs))}</code></p>"
        )
    if path.suffix == ".json":
        text = json.dumps(json.loads(path.read_text()), indent=2)
        return f"<pre>{html.escape(text[:4000])}</pre>"
    if path.exists():
        return f"<p>{path.stat().st_size:,} bytes.</p>"
    return "<p class=muted>Missing.</p>"


def _content(content: Any) -> str:
    if hasattr(content, "to_html"):
        return _table(content)
    return f"<p>{html.escape(str(content))}</p>"


def _table(frame: pd.DataFrame) -> str:
    rendered = frame.to_html(index=False, border=0, na_rep="—", float_format=lambda v: f"{v:.4g}")
    return rendered.replace("<td>pass</td>", "<td class=pass>pass</td>").replace(
        "<td>FAIL</td>", "<td class=fail>FAIL</td>"
    )


def _cell(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return f"<a href='{html.escape(value)}'>{html.escape(value)}</a>"
    return html.escape(value)


def _histogram(values: pd.Series, numeric: bool) -> str:
    """A small inline SVG bar chart: binned numbers, or the most frequent categories."""
    import numpy as np

    if not len(values):
        return ""
    if numeric:
        counts, edges = np.histogram(values.astype(float), bins=min(12, max(1, values.nunique())))
        labels = [f"{a:.3g}–{b:.3g}" for a, b in itertools.pairwise(edges)]
    else:
        top = values.astype(str).value_counts().head(8)
        counts, labels = top.to_numpy(), list(top.index)
    width, height, gap = 160, 36, 2
    bar = width / len(counts)
    peak = max(int(counts.max()), 1)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - height * c / peak:.1f}' width='{bar - gap:.1f}' "
        f"height='{height * c / peak:.1f}' fill='#4c78a8'><title>{html.escape(str(label))}: "
        f"{int(c):,}</title></rect>"
        for i, (c, label) in enumerate(zip(counts, labels, strict=True))
    )
    return f"<svg width='{width}' height='{height}' role='img'>{bars}</svg>"


def point_plot(x: list[int], labels: list[str], y: list[float], xlabel: str, ylabel: str) -> bytes:
    """A plot for a report, as PNG: a point per value of `y` at its label's position `x`,
    and a line through the mean at each position."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.2))
    axes.scatter(x, y, color="#1f77b4", zorder=3)
    means: dict[int, list[float]] = {}
    for position, value in zip(x, y, strict=True):
        means.setdefault(position, []).append(value)
    positions = sorted(means)
    axes.plot(positions, [sum(means[p]) / len(means[p]) for p in positions], color="#aaaaaa")
    axes.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(f"{ylabel} by {xlabel}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
