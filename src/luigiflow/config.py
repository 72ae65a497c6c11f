"""Read `luigi.toml` through Luigi's own TOML parser and check it against the task classes.

Luigi applies a section to the task family of the same name, but under its TOML parser an
unknown key is ignored without a word, `IntParameter` accepts `1.5` and `true`, and a native
TOML array breaks `ListParameter`. So every section, key and value is checked here against the
parameters the classes declare, before any MLflow run exists, and values are handed to Luigi
in the serialized form its parameters parse.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import toml
from luigi.configuration import LuigiTomlParser, get_config
from luigi.freezing import recursively_unfreeze

from luigiflow.dataset import KEYS as DATASET_KEYS
from luigiflow.redact import (
    ENV_REFERENCE,
    MASK,
    Redactor,
    holds_uri_credentials,
    is_secret_key,
    redact_uri,
)
from luigiflow.values import FollowsRunConfig, native, serialize

RUN_SECTION = "RunConfig"
PATH_SECTION = "PathConfig"
SWEEP_SECTION = "Sweep"  # read by luigiflow.sweep; never a Luigi section
DATASET_SECTION = "Dataset"  # read by luigiflow.dataset; never a Luigi section
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-fA-F]{32})/(?P<path>[^\s]+?)/?$")


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


class RunConfig(luigi.Config):
    """What to run: `[RunConfig]` in luigi.toml."""

    experiment_name = luigi.Parameter(default="Default", description="MLflow experiment")
    description = luigi.Parameter(default="", description="the run's note in the MLflow UI")
    task = luigi.Parameter(description="the task to build, with everything it needs")
    run_name = luigi.Parameter(default="", description="the run's name (MLflow picks one if empty)")
    tags = luigi.DictParameter(default={}, description="extra tags for the run")


@dataclass
class Config:
    """A validated configuration: raw values per section, plus what the runner needs at once."""

    path: Path | str  # the file, or where the values came from (a run's context)
    sections: dict[str, dict[str, object]]  # as written (after --set); secrets resolved
    run: dict[str, object]  # [RunConfig] with its defaults filled in
    input_dir: Path
    reuse: dict[str, str] = field(default_factory=dict)  # task -> runs:/ URI or absolute folder
    paths: dict[str, str] = field(default_factory=dict)  # [PathConfig] as written
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)  # (section, key) -> VAR
    sweep: dict[str, object] = field(default_factory=dict)  # [Sweep] as written
    dataset: dict[str, object] = field(default_factory=dict)  # [Dataset] as written

    @property
    def task(self) -> str:
        return str(self.run["task"])

    def secret_values(self) -> list[str]:
        return [str(self.sections[s][k]) for s, k in self.secrets]


def parse_override(text: str) -> tuple[str, str, object]:
    """`Section.key=value` from the command line; the value is read as TOML (`3`, `true`, `["a"]`)
    and taken as a plain string when it is not valid TOML (`sklearn.svm.SVC`)."""
    name, eq, raw = text.partition("=")
    section, dot, key = name.strip().rpartition(".")
    if not eq or not dot or not section or not key:
        raise ConfigError("--set", f"expected Section.key=value, got '{text}'")
    try:
        value = toml.loads(f"v = {raw}")["v"]
    except toml.TomlDecodeError:
        value = raw
    return section, key, value


def load_config(
    path: Path,
    project_root: Path,
    task_classes: Mapping[str, type[luigi.Task]],
    overrides: Iterable[str] = (),
    task: str | None = None,
) -> Config:
    """Load a TOML file, apply overrides, validate it and install it for Luigi."""
    if not path.is_file():
        raise ConfigError(path, "config file not found")
    try:
        raw = recursively_unfreeze(_luigi_parser([path]).read([str(path)]))
    except toml.TomlDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    return parse_config(raw, path, project_root, task_classes, overrides, task)


def parse_config(
    raw: dict[str, dict[str, object]],
    path: Path | str,
    project_root: Path,
    task_classes: Mapping[str, type[luigi.Task]],
    overrides: Iterable[str] = (),
    task: str | None = None,
) -> Config:
    """Validate config values (from a file, or a run's context) and install them for Luigi:
    each task's section becomes its parameters. Raise ConfigError naming the key."""
    raw = {section: dict(values) for section, values in raw.items()}
    sources = {(s, k): str(path) for s, values in raw.items() for k in values}
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})[key] = value
        sources[(section, key)] = f"--set {section}.{key}"
    if task:
        raw.setdefault(RUN_SECTION, {})["task"] = task
        sources[(RUN_SECTION, "task")] = "--task"

    secrets = _resolve_secrets(raw, sources, task_classes)
    serialized = _serialize_sections(raw, sources, path, task_classes)
    _check_task(raw.get(RUN_SECTION, {}), sources, path, task_classes)
    _refuse_uri_credentials(raw, sources, path)
    paths = {k: str(v) for k, v in raw.get(PATH_SECTION, {}).items()}
    input_dir, reuse = _path_config(
        raw.get(PATH_SECTION, {}), sources, path, project_root, task_classes
    )
    _luigi_parser([]).data = serialized
    resolved_run = RunConfig()
    run = {
        name: recursively_unfreeze(getattr(resolved_run, name))
        for name, _ in RunConfig.get_params()
    }
    _follow_run_config(serialized, raw, run, task_classes)
    sweep = dict(raw.get(SWEEP_SECTION, {}))
    dataset = dict(raw.get(DATASET_SECTION, {}))
    return Config(path, raw, run, input_dir, reuse, paths, secrets, sweep, dataset)


def _follow_run_config(
    serialized: dict[str, dict[str, str]],
    raw: Mapping[str, Mapping[str, object]],
    run: Mapping[str, object],
    task_classes: Mapping[str, type[luigi.Task]],
) -> None:
    """A parameter that follows a `[RunConfig]` value (`values.FollowsRunConfig`) takes it,
    for Luigi, where its section leaves it out."""
    for family, cls in task_classes.items():
        for name, param in cls.get_params():
            if isinstance(param, FollowsRunConfig) and name not in raw.get(family, {}):
                serialized.setdefault(family, {})[name] = str(run[param.run_key])


def _serialize_sections(
    raw: Mapping[str, Mapping[str, object]],
    sources: Mapping[tuple[str, str], str],
    path: Path | str,
    task_classes: Mapping[str, type[luigi.Task]],
) -> dict[str, dict[str, str]]:
    """Every section checked against the class it configures, in the strings Luigi parses."""
    known = {RUN_SECTION: RunConfig, **_luigi_config_classes(), **task_classes}
    serialized: dict[str, dict[str, str]] = {}
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(path, "expected a [section] of keys", section)
        if section in (PATH_SECTION, SWEEP_SECTION):
            continue
        if section == DATASET_SECTION:  # its values are checked against the data (`dataset`)
            _check_keys(section, values, DATASET_KEYS, sources, path)
            continue
        if section not in known:
            source = sources.get((section, next(iter(values), None)), str(path))
            choices = [RUN_SECTION, PATH_SECTION, DATASET_SECTION, SWEEP_SECTION, *task_classes]
            raise ConfigError(source, "unknown section", section, choices=choices, name=section)
        params = dict(known[section].get_params())
        params.pop("run_id", None)  # set by the runner, never by the config
        for key, value in values.items():
            source = sources.get((section, key), str(path))
            if key not in params:
                moved = (
                    f"unknown key: it is a [{DATASET_SECTION}] key" if key in DATASET_KEYS else ""
                )
                raise ConfigError(
                    source, moved or "unknown key", section, key, choices=params, name=key
                )
            try:
                serialized.setdefault(section, {})[key] = serialize(params[key], value)
            except ValueError as error:
                raise ConfigError(source, str(error), section, key) from None
    return serialized


def _check_keys(section: str, values, known, sources, path) -> None:
    for key in values:
        if key not in known:
            source = sources.get((section, key), str(path))
            raise ConfigError(source, "unknown key", section, key, known, name=key)


def _check_task(
    run: Mapping[str, object],
    sources: Mapping[tuple[str, str], str],
    path: Path | str,
    task_classes: Mapping[str, type[luigi.Task]],
) -> None:
    if "task" not in run:
        raise ConfigError(path, 'no task to build: set task = "<TaskName>"', RUN_SECTION)
    if run["task"] not in task_classes:
        raise ConfigError(
            sources[(RUN_SECTION, "task")],
            f"unknown task '{run['task']}'",
            RUN_SECTION,
            "task",
            choices=task_classes,
            name=str(run["task"]),
        )


def _refuse_uri_credentials(
    raw: Mapping[str, Mapping[str, object]],
    sources: Mapping[tuple[str, str], str],
    path: Path | str,
) -> None:
    """A password inside a URI is masked in the run's note, name and tags ([RunConfig]), which
    only the runner reads. Any other value reaches tasks through the run context and Luigi's
    task ids, where it cannot be masked and still work: such a value is refused (a
    secret-named key takes it from the environment instead). [Sweep]'s values are checked
    as the --set values they become."""
    for section, values in raw.items():
        if section in (RUN_SECTION, SWEEP_SECTION):
            continue
        for key, value in values.items():
            if not is_secret_key(key) and holds_uri_credentials(value):
                raise ConfigError(
                    sources.get((section, key), str(path)), _URI_CREDENTIALS_REFUSED, section, key
                )


_URI_CREDENTIALS_REFUSED = (
    "a password inside a URI would reach the run's records and Luigi's task ids in clear: "
    'give it through the environment, e.g. a task parameter db_password = "${DB_PASSWORD}"'
)


def _resolve_secrets(
    raw: dict[str, dict[str, object]],
    sources: Mapping[tuple[str, str], str],
    task_classes: Mapping[str, type[luigi.Task]],
) -> dict[tuple[str, str], str]:
    """Secret-named task parameters travel as references to environment variables, never as
    values: `api_token = "${API_TOKEN}"` names the variable; a literal value is put in the
    environment under LUIGIFLOW_SECRET_<TASK>_<KEY>, where this process's workers find it.
    Each reference is resolved in place from this process's environment."""
    secrets: dict[tuple[str, str], str] = {}
    for section, values in raw.items():
        if section not in task_classes or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not is_secret_key(key) or not isinstance(value, str):
                continue
            match = ENV_REFERENCE.match(value)
            variable = match["name"] if match else f"LUIGIFLOW_SECRET_{section}_{key}".upper()
            if match is None:
                os.environ[variable] = value
            elif variable not in os.environ:
                how = (
                    "the run was given this secret as a literal value, which lives only in its "
                    f'runner\'s environment: set {variable}, or write {key} = "${{VAR}}"'
                    if variable.startswith("LUIGIFLOW_SECRET_")
                    else "a secret is read from this process's environment, or from .env.local"
                )
                raise ConfigError(
                    sources.get((section, key), ""),
                    f"the environment variable {variable} is not set ({how})",
                    section,
                    key,
                )
            values[key] = os.environ[variable]
            secrets[(section, key)] = variable
    return secrets


def resolved_config(config: Config, tasks: Iterable[luigi.Task]) -> dict[str, dict[str, object]]:
    """Every value the run uses, defaults included, in native TOML types: the run context, and
    logged as the run's config (loadable with --config as it is) and as its params. Secrets
    stay references; the run's note, name and tags are masked (only the runner reads them,
    from its config)."""
    run = {k: v for k, v in config.run.items() if v not in ("", {}, None)}
    resolved: dict[str, dict[str, object]] = {
        RUN_SECTION: Redactor().mapping(run),
        PATH_SECTION: dict(config.paths),
    }
    for section, values in config.sections.items():
        if section not in (RUN_SECTION, PATH_SECTION, SWEEP_SECTION):  # a run is one combination
            resolved[section] = dict(values)
    for task in tasks:
        resolved.setdefault(task.task_family, {}).update(_task_values(task, config))
    for (section, key), variable in config.secrets.items():
        resolved[section][key] = "${" + variable + "}"
    for section, values in resolved.items():
        for key in values:
            if is_secret_key(key) and (section, key) not in config.secrets:
                values[key] = MASK  # a secret-named value without a reference: never logged
    return resolved


def _task_values(task: luigi.Task, config: Config) -> dict[str, object]:
    """A task's parameter values as the run uses them. A default in the code with a password
    inside a URI is refused as a configured one is (`_refuse_uri_credentials`)."""
    values: dict[str, object] = {}
    configured = config.sections.get(task.task_family, {})
    for name, param in task.get_params():
        value = recursively_unfreeze(getattr(task, name))
        # Insignificant ones (retries, timeout_s) only when set: they shape nothing.
        if name == "run_id" or value is None or not (param.significant or name in configured):
            continue
        if not is_secret_key(name) and holds_uri_credentials(value):
            source = f"the default of {task.task_family}.{name} in the code"
            raise ConfigError(source, _URI_CREDENTIALS_REFUSED)
        values[name] = native(param, value)
    return values


def _luigi_parser(paths: list[Path]) -> LuigiTomlParser:
    """Luigi's TOML parser reading only these files: not ./luigi.toml nor /etc/luigi/luigi.toml
    too, so `--config other.toml` never inherits keys silently."""
    LuigiTomlParser._config_paths = [str(path) for path in paths]
    return get_config("toml")


def _luigi_config_classes() -> dict[str, type[luigi.Config]]:
    """Luigi's own sections ([core], [worker], [scheduler], ...) stay available to users."""
    from luigi.task_register import Register

    return {
        name: cls
        for name, cls in Register._get_reg().items()
        if isinstance(cls, type) and issubclass(cls, luigi.Config) and cls is not RunConfig
    }


def _path_config(
    values: Mapping[str, object],
    sources: Mapping[tuple[str, str], str],
    path: Path,
    project_root: Path,
    task_classes: Mapping[str, type],
) -> tuple[Path, dict[str, str]]:
    """`[PathConfig]`: the input folder, and earlier outputs to reuse keyed by task name."""
    reuse: dict[str, str] = {}
    for key, value in values.items():
        source = sources.get((PATH_SECTION, key), str(path))
        if key != "input" and key not in task_classes:
            choices = ["input", *task_classes]
            raise ConfigError(source, "unknown key", PATH_SECTION, key, choices=choices, name=key)
        if not isinstance(value, str) or not value:
            raise ConfigError(source, f"expected a path, got {value!r}", PATH_SECTION, key)
        if key != "input":
            reuse[key] = _reuse_source(value, source, key, project_root)

    input_dir = Path(str(values.get("input", "input")))
    input_dir = input_dir if input_dir.is_absolute() else project_root / input_dir
    if not input_dir.is_dir():
        source = sources.get((PATH_SECTION, "input"), str(path))
        raise ConfigError(source, f"input folder {input_dir} does not exist", PATH_SECTION, "input")
    return input_dir.resolve(), reuse


def _reuse_source(value: str, source: str, task: str, project_root: Path) -> str:
    """A `runs:/<run_id>/<Task>` URI as it is, or a local folder made absolute. A `..`
    segment is refused before anything is normalised: it could leave the run it names."""
    if ".." in re.split(r"[/\\]", value):
        raise ConfigError(source, f"'{value}': a path with '..' is not allowed", PATH_SECTION, task)
    if value.startswith("runs:"):
        if not RUNS_URI.match(value):
            raise ConfigError(
                source,
                f"'{value}' is not of the form runs:/<32-hex run id>/{task}",
                PATH_SECTION,
                task,
            )
        return value
    if "://" in value or value.startswith("mlflow-artifacts:"):
        raise ConfigError(
            source, f"'{value}': give runs:/<run_id>/{task} or a local folder", PATH_SECTION, task
        )
    folder = Path(value) if Path(value).is_absolute() else project_root / value
    if not folder.is_dir():
        raise ConfigError(source, f"folder {folder} does not exist", PATH_SECTION, task)
    return str(folder.resolve())
