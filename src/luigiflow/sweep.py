"""A sweep: the grid of `[Sweep]` in luigi.toml and `--sweep` options, one child run per
combination. This module reads and checks the grid; each combination becomes `--set`
overrides of the experiment's own config, so a child is planned exactly as a plain run with
those values would be (and shares its cache).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import toml

from luigiflow.config import ConfigError
from luigiflow.names import better
from luigiflow.redact import is_secret_key
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


def parameters(task_classes: Mapping[str, type]) -> dict[str, list[str]]:
    """Each task's parameters that a sweep may vary (not the run id, not a secret)."""
    return {
        family: [n for n, _ in cls.get_params() if n != "run_id" and not is_secret_key(n)]
        for family, cls in task_classes.items()
    }


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
    return (section, key), [_read_value(part) for part in split_values(raw)]


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


def _read_value(raw: str) -> object:
    try:
        return toml.loads(f"v = {raw}")["v"]
    except toml.TomlDecodeError:
        return raw
