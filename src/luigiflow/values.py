"""One config value at a time: checked strictly against the Luigi parameter it sets, and
written back as TOML.

Luigi's TOML parser accepts `1.5` and `true` for an `IntParameter`, breaks on native arrays for
`ListParameter`, and checks a `NumericalParameter`'s range only when it parses a string; so
each value is checked here, once, where it enters (luigi.toml, `--set`, a logged config), and
kept in native TOML types from then on: in the run context, and as the arguments a task is
built with (`PipelineTask.get_param_values`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import luigi
from luigi.configuration import LuigiTomlParser, get_config
from luigi.freezing import recursively_unfreeze

from luigiflow.redact import redact_uri


class ConfigError(Exception):
    """A configuration mistake, located by file, section and key, with the nearest valid name."""

    def __init__(
        self,
        source: str | Path,
        message: str,
        section: str | None = None,
        key: str | None = None,
        choices: Iterable[str] = (),
        name: str | None = None,
    ) -> None:
        self.source, self.section, self.key = str(source), section, key
        location = self.source + (f" [{section}]" if section else "") + (f" {key}" if key else "")
        hint = ""
        near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6) if name else []
        if near:
            hint = f" Did you mean '{near[0]}'?"
        elif name and choices:
            hint = f" Valid names: {', '.join(sorted(choices))}."
        end = "" if not hint or message.endswith((".", "?", ")")) else "."
        # A message may quote the value it refuses: never a password inside a URI.
        super().__init__(redact_uri(f"{location}: {message}{end}{hint}"))


class FollowsRunConfig(luigi.Parameter):
    """A text parameter that takes a `[RunConfig]` value when its section leaves it out:
    `[Register] model_name` is the experiment's name unless luigi.toml names another. The
    value is filled in when the config is checked (`config.parse_config`), so the run
    records, fingerprints and shows the name it uses, as if it had been written."""

    def __init__(self, run_key: str, **kwargs) -> None:
        super().__init__(default="", **kwargs)
        self.run_key = run_key


def implied_by_run_config(
    raw: Mapping[str, Mapping[str, object]],
    run: Mapping[str, object],
    task_classes: Mapping[str, type[luigi.Task]],
) -> dict[str, dict[str, object]]:
    """A parameter that follows a `[RunConfig]` value (`values.FollowsRunConfig`) takes it
    where its section leaves it out."""
    implied: dict[str, dict[str, object]] = {}
    for family, cls in task_classes.items():
        for name, param in cls.get_params():
            if isinstance(param, FollowsRunConfig) and name not in raw.get(family, {}):
                implied.setdefault(family, {})[name] = str(run[param.run_key])
    return implied


def _expected(param: luigi.Parameter) -> tuple[tuple[type, ...], str] | None:
    """The TOML types a parameter accepts, and how to name them in an error."""
    if isinstance(param, luigi.BoolParameter):
        return (bool,), "true or false"
    if isinstance(param, luigi.IntParameter):
        return (int,), "an integer"
    if isinstance(param, luigi.FloatParameter):
        return (int, float), "a number"
    if isinstance(param, luigi.ListParameter | luigi.TupleParameter):
        return (list, str), "an array"
    if isinstance(param, luigi.DictParameter):
        return (dict, str), "a table"
    plain = (luigi.Parameter, luigi.OptionalParameter, luigi.OptionalStrParameter, FollowsRunConfig)
    if type(param) in plain:
        return (str,), "a string"
    if isinstance(param, luigi.NumericalParameter | luigi.ChoiceParameter) and not isinstance(
        param, luigi.ChoiceListParameter
    ):
        return {
            int: ((int,), "an integer"),
            float: ((int, float), "a number"),
            str: ((str,), "a string"),
        }.get(param._var_type)
    return None


def checked(param: luigi.Parameter, value: object) -> object:
    """`value` checked strictly against `param`, in the native TOML types the parameter holds
    it as from now on (`3` for a float parameter is 3.0, a JSON string for a list parameter is
    a list): the one check a value gets, where it enters. ValueError saying what is wrong."""
    parsed = param.normalize(param.parse(serialize(param, value)))
    return native(param, recursively_unfreeze(parsed))


def serialize(param: luigi.Parameter, value: object) -> str:
    """Check `value` strictly against `param` and return the string Luigi parses back (for
    Luigi's own sections, which Luigi reads from its configuration); ValueError saying what
    is wrong."""
    expected = _expected(param)
    if expected:
        types, wanted = expected
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"expected {wanted}, got {type(value).__name__} {value!r}")
    if isinstance(value, list | dict):
        value = json.dumps(value)
    try:  # NumericalParameter checks its range in parse only, so native numbers go there too
        bounded = isinstance(param, luigi.NumericalParameter)
        parsed = param.parse(value) if isinstance(value, str) or bounded else value
        parsed = param.normalize(parsed)
        return param.serialize(parsed)
    except Exception as error:  # luigi raises ValueError, TypeError, JSONDecodeError...
        if isinstance(value, str) and expected and expected[1] in ("an array", "a table"):
            raise ValueError(f"expected {expected[1]}, got str {value!r}") from None  # no JSON
        raise ValueError(f"invalid value {value!r}: {_allowed(param) or error}") from None


def argument(param: luigi.Parameter, value: object) -> object:
    """A checked value (`checked`) as the argument a task is built with: as it is, except the
    text of a parameter TOML has no type for (a date), which the parameter parses."""
    if _expected(param) is None and isinstance(value, str):
        return param.parse(value)
    return value


def _allowed(param: luigi.Parameter) -> str | None:
    """The values a bounded parameter takes, readably: `must be >= 2`, `must be one of ...`.
    An upper bound of 2**63 or more only fills NumericalParameter's required max_value."""
    if isinstance(param, luigi.ChoiceParameter):
        return f"must be one of {', '.join(repr(choice) for choice in sorted(param._choices))}"
    if not isinstance(param, luigi.NumericalParameter):
        return None

    def bound(sign: str, op, value) -> str:  # inclusive when the bound itself passes `op`
        shown = f"{value:.15g}" if isinstance(value, float) else value
        return f"{sign}{'=' if op(value, value) else ''} {shown}"

    low = bound(">", param._left_op, param._min_value)
    if param._max_value >= 2**63:
        return f"must be {low}"
    return f"must be {low} and {bound('<', param._right_op, param._max_value)}"


def native(param: luigi.Parameter, value: object) -> object:
    if isinstance(value, str | int | float | bool | list | dict):
        return value
    return param.serialize(value)  # dates and the like: the string Luigi parses back


def install_luigi_sections(sections: Mapping[str, Mapping[str, str]]) -> None:
    """Luigi's own sections ([core], [worker], ...), for Luigi, which reads its configuration
    itself; only these (a task's values reach it through its run's context)."""
    _luigi_parser().data = {section: dict(values) for section, values in sections.items()}


def luigi_sections(sections: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, str]]:
    """The sections of a checked config (a run's context) that are Luigi's own, in the
    strings Luigi parses."""
    known = luigi_config_classes()
    return {
        section: {k: serialize(dict(known[section].get_params())[k], v) for k, v in values.items()}
        for section, values in sections.items()
        if section in known
    }


def _luigi_parser() -> LuigiTomlParser:
    """Luigi's TOML parser, reading no file of its own (not ./luigi.toml nor
    /etc/luigi/luigi.toml), so `--config other.toml` never inherits keys silently."""
    LuigiTomlParser._config_paths = []
    return get_config("toml")


def luigi_config_classes() -> dict[str, type[luigi.Config]]:
    """The classes of Luigi's own sections ([core], [worker], [scheduler], ...), which stay
    available to users ([RunConfig] is the runner's)."""
    from luigi.task_register import Register

    return {
        name: cls
        for name, cls in Register._get_reg().items()
        if isinstance(cls, type) and issubclass(cls, luigi.Config) and name != "RunConfig"
    }


def read_value(raw: str) -> object:
    """A value from the command line, read as TOML (`3`, `true`, `["a"]`), or taken as a plain
    string when it is not valid TOML (`sklearn.svm.SVC`). A value that opens as a TOML table,
    array or string (`{C=}`, `["a",`) meant to be one: ValueError saying where it breaks."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as error:
        if raw.strip().startswith(("{", "[", '"', "'")):
            problem = NotToml(error)
            column = f" at character {problem.column - 4}" if problem.column else " at its end"
            raise ValueError(f"{raw!r} is not a TOML value: {problem.reason}{column}") from None
        return raw


class NotToml(ValueError):
    """Why and where tomllib says a document breaks: its line and column (None at its end)."""

    # "Expected ']' (at line 3, column 9)", or "... (at end of document)"
    PLACE = re.compile(
        r"\s*\((?:at line (?P<line>\d+), column (?P<column>\d+)|at end of document)\)"
    )

    def __init__(self, error: tomllib.TOMLDecodeError) -> None:
        where = self.PLACE.search(str(error))
        self.reason = self.PLACE.sub("", str(error)).strip()
        self.line = int(where["line"]) if where and where["line"] else None
        self.column = int(where["column"]) if where and where["column"] else None
        super().__init__(f"not valid TOML: {self.reason}")


def dumps(resolved: Mapping[str, Mapping[str, object]]) -> str:
    """A resolved config as TOML a person would write: a section per task, one `key = value`
    line per parameter, tables and arrays inline (`estimator_params = { max_iter = 1000 }`)."""
    lines = []
    for section, values in resolved.items():
        lines += [f"[{_toml_key(section)}]"]
        lines += [f"{_toml_key(key)} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: object) -> str:
    """One value as TOML text (`3`, `"a"`, `{ C = 1 }`), as a config file or `--set` has it."""
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)  # strings, numbers and booleans are written alike in JSON
