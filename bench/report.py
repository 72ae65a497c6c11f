"""Turn the benchmark's raw samples into the tables and ratios of bench/RESULTS.md."""

from __future__ import annotations

import statistics

TASKS = ("Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction")
AT_LEAST = True  # a speed-up: the target is a floor, not a ceiling
# (name, numerator, denominator, measure, target by size ("*": every size)[, AT_LEAST])
RATIOS = [
    (
        "cold / plain + MLflow",
        "luigiflow cold",
        "plain + MLflow",
        "seconds",
        {"example": 1.10, "1M": 1.05},
    ),
    ("cold / plain", "luigiflow cold", "plain", "seconds", {}),
    ("reused / store floor", "luigiflow reused", "store floor", "seconds", {"*": 1.25}),
    ("reused / import floor", "luigiflow reused", "import floor", "seconds", {}),
    ("--workers 2 / cold", "luigiflow --workers 2", "luigiflow cold", "seconds", {"*": 1.05}),
    (
        "sweep of 4 Trainers: speed-up of 2 workers (1 worker / 2 workers)",
        "sweep of 4, 1 worker",
        "sweep of 4, 2 workers",
        "seconds",
        {"example": 1.5, "100k": 1.7},
        AT_LEAST,
    ),
    ("on server / cold", "luigiflow on server", "luigiflow cold", "seconds", {}),
    ("reused on server / reused", "luigiflow reused on server", "luigiflow reused", "seconds", {}),
    ("reused on server / store floor", "luigiflow reused on server", "store floor", "seconds", {}),
    (
        "branches: speed-up of 2 workers (1 worker / 2 workers on two clones)",
        "branches, 1 worker",
        "branches, 2 workers on two clones",
        "seconds",
        {},
    ),
    ("peak RSS cold / plain", "luigiflow cold", "plain", "peak_rss_mb", {"1M": 1.3}),
]
OVERHEAD_TARGET = 0.1  # seconds of bookkeeping per task, on the example data


def median(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def ratios(size: str, variants: dict[str, list[dict]]) -> list[tuple[str, float, str]]:
    """Each ratio measured for this size, with its target and whether it was met."""
    found = []
    for name, top, bottom, key, targets, *floor in RATIOS:
        if top in variants and bottom in variants:
            value = median(variants[top], key) / median(variants[bottom], key)
            target = targets.get(size, targets.get("*"))
            found.append((name, value, _verdict(value, target, bool(floor))))
    return found


def _verdict(value: float, target: float | None, at_least: bool) -> str:
    if target is None:
        return ""
    met = value >= target if at_least else value <= target
    return f"{'≥' if at_least else '≤'} {target:.2f} {'met' if met else '**missed**'}"


def task_overheads(samples: list[dict]) -> dict[str, tuple[float, float]]:
    """Per task: median wall time and median framework overhead."""
    return {
        task: (
            statistics.median(s["tasks"][task]["seconds"] for s in samples),
            statistics.median(s["tasks"][task]["overhead"] for s in samples),
        )
        for task in TASKS
        if all(task in s.get("tasks", {}) for s in samples)
    }


def write_report(results: dict) -> str:
    machine = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [
        "# Benchmark: luigiflow against a plain script",
        "",
        f"{machine['date']} on {machine['platform']}, {machine['cores']} cores, "
        f"{machine['memory_gb']} GB; Python {machine['python']}; {versions}.",
        "Each variant is a fresh process; times are wall seconds (median, min, max),",
        "memory is the peak resident set of the whole process tree. Made by `make bench`.",
    ]
    if machine.get("postgresql"):
        lines += [
            "",
            '"On server" is the stack of docker-compose.yml run as local processes: MLflow\'s '
            f"tracking server on PostgreSQL {machine['postgresql']} (proxied artifacts, one "
            'server process) and luigid. "Branches" is bench/branches.py (two random '
            "forests after the Splitter) on that stack, run by one runner, then by two "
            "clones in separate folders (the second joins with --join; on this one machine, "
            "so they share its cores).",
        ]
    for size, variants in results["sizes"].items():
        lines += [
            "",
            f"## {size}",
            "",
            "| variant | runs | median s | min s | max s | peak RSS MB |",
            "|---|---|---|---|---|---|",
        ]
        for variant, samples in variants.items():
            seconds = [s["seconds"] for s in samples]
            split = [s["processes"] for s in samples if s.get("processes")]
            note = f" (branches ran in {'/'.join(map(str, split))} processes)" if split else ""
            memory = median(samples, "peak_rss_mb")
            lines.append(
                f"| {variant}{note} | {len(samples)} | {statistics.median(seconds):.2f} "
                f"| {min(seconds):.2f} "
                f"| {max(seconds):.2f} | {f'{memory:.0f}' if memory else '—'} |"
            )
        lines += ["", "| ratio | value | target |", "|---|---|---|"]
        for name, value, verdict in ratios(size, variants):
            lines.append(f"| {name} | {value:.3f} | {verdict} |")
        for variant in ("luigiflow cold", "luigiflow on server"):
            if variant not in variants:
                continue
            per_task = task_overheads(variants[variant])
            lines += [
                "",
                f"{variant}, per task:",
                "",
                "| task | median s | framework overhead s |",
                "|---|---|---|",
            ]
            for task, (seconds, overhead) in per_task.items():
                mark = (
                    " (target ≤ 0.1)" if size == "example" and variant == "luigiflow cold" else ""
                )
                lines.append(f"| {task} | {seconds:.3f} | {overhead:.3f}{mark} |")
        lines += request_table(variants.get("luigiflow on server"))
        lines += verification_table(results.get("verification", {}).get(size, {}))
    model = results.get("serialization", {})
    if model:
        lines += [
            "",
            "## Model serialization (fresh process each, import of the serializer included)",
            "",
            "| format | save s | load s |",
            "|---|---|---|",
        ]
        lines += [f"| {fmt} | {t['save']:.2f} | {t['load']:.2f} |" for fmt, t in model.items()]
    return "\n".join(lines) + "\n"


def verification_table(stores: dict[str, dict]) -> list[str]:
    """Per task and store: what checking its outputs costs before a later run reuses them."""
    if not stores:
        return []
    names = list(stores)
    lines = [
        "",
        "Verifying a reused task's outputs (recorded digest, every file fetched afresh and "
        "hashed), per task:",
        "",
        "| task | files | MB | " + " | ".join(f"{name} s" for name in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    first = stores[names[0]]
    for task, cost in first.items():
        seconds = " | ".join(f"{stores[n].get(task, {}).get('seconds', 0):.3f}" for n in names)
        lines.append(f"| {task} | {cost['files']} | {cost['mb']:.2f} | {seconds} |")
    return lines


def request_table(server: list[dict] | None) -> list[str]:
    """The HTTP requests of one cold run against the server, by kind."""
    if not server or not server[-1].get("requests"):
        return []
    counts: dict[str, int] = {}
    for request, count in server[-1]["requests"].items():
        method, path = request.split(" ", 1)
        if "/mlflow-artifacts/artifacts/" in path:  # one artifact's upload or download
            request = f"{method} /api/2.0/mlflow-artifacts/artifacts/<file>"
        counts[request] = counts.get(request, 0) + count
    lines = ["", f"HTTP requests of one cold run against the server: {sum(counts.values())}", ""]
    lines += ["| request | count |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return lines
