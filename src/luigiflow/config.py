"""Read `luigi.toml` and check it against the task classes, before any MLflow run exists.

Every section, key and value is checked here against the parameters the classes declare (under
Luigi's own TOML handling an unknown key is ignored without a word, `IntParameter` accepts
`1.5` and a native array breaks `ListParameter`). A task's values then reach it by one channel:
the plan writes them into the run context, and every task instance takes its parameters from
its run's context (`PipelineTask.get_param_values`). Luigi's global configuration holds only
Luigi's own sections ([core], [worker], [scheduler], ...).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import luigi
from luigi.freezing import recursively_unfreeze

from luigiflow.inputs import KEYS as DATASET_KEYS
from luigiflow.redact import (
    URI_CREDENTIALS_REFUSED,
    UnsetSecret,
    secret_references,
    unset_references,
    uri_credentials,
)
from luigiflow.values import (
    ConfigError,
    NotToml,
    checked,
    implied_by_run_config,
    install_luigi_sections,
    luigi_config_classes,
    read_value,
    serialize,
)

RUN_SECTION = "RunConfig"
PATH_SECTION = "PathConfig"
SWEEP_SECTION = "Sweep"  # read by luigiflow.sweep; never a Luigi section
DATASET_SECTION = "Dataset"  # read by luigiflow.inputs; never a Luigi section
MAX_EXPERIMENT_NAME = 500  # MLflow's own limit (mlflow.utils.validation)
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-fA-F]{32})/(?P<path>[^\s]+?)/?$")


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
    # As written (after --set), each value checked and native; secrets as `${VAR}` references.
    sections: dict[str, dict[str, object]]
    run: dict[str, object]  # [RunConfig] with its defaults filled in
    input_dir: Path
    reuse: dict[str, str] = field(default_factory=dict)  # task -> runs:/ URI or absolute folder
    paths: dict[str, str] = field(default_factory=dict)  # [PathConfig] as written
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)  # (section, key) -> VAR
    sweep: dict[str, object] = field(default_factory=dict)  # [Sweep] as written
    dataset: dict[str, object] = field(default_factory=dict)  # [Dataset] as written
    # A task's value its section leaves out but [RunConfig] gives (`values.FollowsRunConfig`).
    implied: dict[str, dict[str, object]] = field(default_factory=dict)
    # (section, key) -> where its value came from: the file, `--set Section.key`, `--task`.
    sources: dict[tuple[str, str], str] = field(default_factory=dict)

    def source(self, section: str | None, key: str | None = None) -> str:
        """Where a value came from, for an error about it: the file unless `--set` gave it."""
        return self.sources.get((section or "", key or ""), str(self.path))

    @property
    def task(self) -> str:
        return str(self.run["task"])

    def task_sections(self) -> dict[str, dict[str, object]]:
        """The values tasks are built with before their run exists: the sections that are not
        the runner's, with what [RunConfig] implies."""
        own = (RUN_SECTION, PATH_SECTION, SWEEP_SECTION, DATASET_SECTION)
        found = {s: dict(v) for s, v in self.sections.items() if s not in own}
        for section, values in self.implied.items():
            found[section] = {**values, **found.get(section, {})}
        return found


def parse_override(text: str, option: str = "--set") -> tuple[str, str, object]:
    """`Section.key=value` from the command line; the value is read as TOML (`3`, `true`, `["a"]`)
    and taken as a plain string when it is not valid TOML (`sklearn.svm.SVC`)."""
    name, eq, raw = text.partition("=")
    if any("\udc80" <= character <= "\udcff" for character in text):  # bytes, not UTF-8
        raise ConfigError(f"{option} {name}", "not UTF-8 text")
    section, dot, key = name.strip().rpartition(".")
    if not eq or not dot or not section or not key:
        raise ConfigError(option, f"expected Section.key=value, got '{text}'")
    try:
        return section, key, read_value(raw)
    except ValueError as error:
        raise ConfigError(f"{option} {section}.{key}", str(error)) from None


def load_config(
    path: Path, project_root: Path, task_classes, overrides: Iterable[str] = (), task=None, swept=()
) -> Config:
    """Load a TOML file (UTF-8), apply overrides and check it (see `parse_config`)."""
    if not path.is_file():
        raise ConfigError(
            path, "a folder, not a config file" if path.is_dir() else "config file not found"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}", "not UTF-8: save the file as UTF-8") from None
    raw = parse_toml(text, path)
    return parse_config(raw, path, project_root, task_classes, overrides, task, swept)


def parse_toml(text: str, source: str | Path) -> dict[str, dict[str, object]]:
    """A TOML document, or ConfigError with its line and column and the line itself."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problem = NotToml(error)
        if problem.line is None:
            raise ConfigError(source, f"{problem} at the end of the file") from None
        shown, pointer = text.splitlines()[problem.line - 1], " " * (problem.column - 1) + "^"
        where = f"{source}:{problem.line}:{problem.column}"
        raise ConfigError(where, f"{problem}\n    {shown}\n    {pointer}") from None


def parse_config(
    raw: dict[str, dict[str, object]],
    path: Path | str,
    project_root: Path,
    task_classes: Mapping[str, type[luigi.Task]],
    overrides: Iterable[str] = (),
    task: str | None = None,
    swept: Iterable[str] = (),
) -> Config:
    """Check config values (from a file, or a logged config), once: each value against the
    parameter it sets, kept native from then on. Luigi's own sections are installed for
    Luigi; nothing else is. `swept`: a sweep's values for one child. Raise ConfigError
    naming the key."""
    raw = {section: dict(values) for section, values in raw.items()}
    sources = {(s, k): str(path) for s, values in raw.items() for k in values}
    given = [*((text, "--set") for text in overrides), *((text, "--sweep") for text in swept)]
    for text, option in given:
        section, key, value = parse_override(text, option)
        if sources.get((section, key), "").startswith("--set") and option == "--sweep":
            raise ConfigError(f"--set {section}.{key}", "is swept too: set it, or sweep it")
        raw.setdefault(section, {})[key] = value
        sources[(section, key)] = f"{option} {section}.{key}"
    if task:
        raw.setdefault(RUN_SECTION, {})["task"] = task
        sources[(RUN_SECTION, "task")] = "--task"

    secrets = _secret_references(raw, sources, task_classes)
    luigi_sections = _check_sections(raw, sources, path, task_classes, secrets)
    _check_task(raw.get(RUN_SECTION, {}), sources, path, task_classes)
    _check_run(raw.get(RUN_SECTION, {}), sources, path)
    _refuse_uri_credentials(raw, sources, path)
    paths = {k: str(v) for k, v in raw.get(PATH_SECTION, {}).items()}
    input_dir, reuse = _path_config(
        raw.get(PATH_SECTION, {}), sources, path, project_root, task_classes
    )
    install_luigi_sections(luigi_sections)
    given = raw.get(RUN_SECTION, {})
    run = {
        name: recursively_unfreeze(given.get(name, param._default))
        for name, param in RunConfig.get_params()
    }
    implied = implied_by_run_config(raw, run, task_classes)
    sweep = dict(raw.get(SWEEP_SECTION, {}))
    dataset = dict(raw.get(DATASET_SECTION, {}))
    return Config(
        path, raw, run, input_dir, reuse, paths, secrets, sweep, dataset, implied, sources
    )


def _check_sections(raw, sources, path, task_classes, secrets) -> dict[str, dict[str, str]]:
    """Every section checked against the class it configures; each value replaced by its
    checked, native form (a secret by its reference, its value checked). Returns Luigi's own
    sections in the strings Luigi parses."""
    luigi_classes = luigi_config_classes()
    known = {RUN_SECTION: RunConfig, **luigi_classes, **task_classes}
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
        checked_section = _check_section(
            section, values, known[section], sources, path, secrets, section in luigi_classes
        )
        if section in luigi_classes:
            serialized[section] = checked_section
    return serialized


def _check_section(section, values, cls, sources, path, secrets, for_luigi) -> dict[str, str]:
    """One section's values against `cls`'s parameters, each replaced by its native form;
    for Luigi's own sections, returned as the strings Luigi parses."""
    params = dict(cls.get_params())
    params.pop("run_id", None)  # set by the runner, never by the config
    serialized: dict[str, str] = {}
    for key, value in values.items():
        source = sources.get((section, key), str(path))
        if key not in params:
            moved = f"unknown key: it is a [{DATASET_SECTION}] key" if key in DATASET_KEYS else ""
            raise ConfigError(source, moved or "unknown key", section, key, params, name=key)
        variable = secrets.get((section, key))
        try:
            if for_luigi:
                serialized[key] = serialize(params[key], value)
            elif variable:  # the secret's value is checked; its reference travels
                checked(params[key], os.environ[variable])
            else:
                values[key] = checked(params[key], value)
        except ValueError as error:
            raise ConfigError(source, str(error), section, key) from None
    return serialized


def _check_keys(section: str, values, known, sources, path) -> None:
    for key in values:
        if key not in known:
            source = sources.get((section, key), str(path))
            raise ConfigError(source, "unknown key", section, key, known, name=key)


def _check_task(run: Mapping[str, object], sources, path, task_classes) -> None:
    if "task" not in run:
        raise ConfigError(path, 'no task to build: set task = "<TaskName>"', RUN_SECTION)
    if run["task"] not in task_classes:
        name, source = str(run["task"]), sources[(RUN_SECTION, "task")]
        raise ConfigError(source, f"unknown task '{name}'", RUN_SECTION, "task", task_classes, name)


def _check_run(run: Mapping[str, object], sources, path) -> None:
    """[RunConfig] values MLflow would refuse or misread: a blank or long experiment name; a
    tag that MLflow or the runner sets (a parent run, a fingerprint), passing for theirs."""
    where = {k: sources.get((RUN_SECTION, k), str(path)) for k in ("experiment_name", "tags")}
    name = str(run.get("experiment_name", "Default"))
    if not name.strip() or len(name) > MAX_EXPERIMENT_NAME:
        message = f"a name of at most {MAX_EXPERIMENT_NAME} characters, and not blank"
        raise ConfigError(where["experiment_name"], message, RUN_SECTION, "experiment_name")
    for tag in dict(run.get("tags") or {}):  # type: ignore[call-overload]
        if str(tag).startswith(("mlflow.", "luigiflow.")):
            message = f"'{tag}' is a tag MLflow or the runner sets: give yours another name"
            raise ConfigError(where["tags"], message, RUN_SECTION, "tags")


def _refuse_uri_credentials(
    raw: Mapping[str, Mapping[str, object]], sources: Mapping[tuple[str, str], str], path
) -> None:
    """A password inside a URI is masked in the run's note, name and tags ([RunConfig]), which
    only the runner reads; anywhere else it is refused (`redact.uri_credentials`). [Sweep]'s
    values are checked as the --set values they become."""
    checked = {s: v for s, v in raw.items() if s not in (RUN_SECTION, SWEEP_SECTION)}
    for section, key in uri_credentials(checked):
        source = sources.get((section, key), str(path))
        raise ConfigError(source, URI_CREDENTIALS_REFUSED, section, key)


def _secret_references(raw, sources, task_classes) -> dict[tuple[str, str], str]:
    """Secrets as references (`redact.secret_references`); each variable must be set."""
    try:
        return secret_references(raw, task_classes)
    except UnsetSecret as unset:
        source = sources.get((unset.section, unset.key), "")
        raise ConfigError(source, str(unset), unset.section, unset.key) from None


def check_secrets(sections: Mapping[str, Mapping[str, object]], source: str) -> None:
    """Every secret a run's tasks read must be in this process's environment (a worker on
    another machine brings its own); ConfigError naming the variable."""
    for unset in unset_references(sections):
        raise ConfigError(source, str(unset), unset.section, unset.key)


def _path_config(values, sources, path, project_root: Path, task_classes) -> tuple[Path, dict]:
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
        problem = "is a file, not a folder" if input_dir.is_file() else "does not exist"
        raise ConfigError(source, f"input folder {input_dir} {problem}", PATH_SECTION, "input")
    return input_dir.resolve(), reuse


def _reuse_source(value: str, source: str, task: str, project_root: Path) -> str:
    """A `runs:/<run_id>/<Task>` URI as it is, or a local folder made absolute. A `..`
    segment is refused before anything is normalised: it could leave the run it names."""
    if ".." in re.split(r"[/\\]", value):
        raise ConfigError(source, f"'{value}': a path with '..' is not allowed", PATH_SECTION, task)
    if value.startswith("runs:"):
        if not RUNS_URI.match(value):
            problem = f"'{value}' is not of the form runs:/<32-hex run id>/{task}"
            raise ConfigError(source, problem, PATH_SECTION, task)
        return value
    if "://" in value or value.startswith("mlflow-artifacts:"):
        problem = f"'{value}': give runs:/<run_id>/{task} or a local folder"
        raise ConfigError(source, problem, PATH_SECTION, task)
    folder = Path(value) if Path(value).is_absolute() else project_root / value
    if not folder.is_dir():
        raise ConfigError(source, f"folder {folder} does not exist", PATH_SECTION, task)
    return str(folder.resolve())
