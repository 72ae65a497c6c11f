"""The pipeline about to run, worked out and checked before any MLflow run exists.

From the requested task down, every task whose output is needed is looked at. A task whose
output can be reused, named in `[PathConfig]` or found in the tracking store by its
fingerprint, counts as complete, so what lies below it is not needed. The result is the run
context (`context.RunContext`): written with the run, it is all any process needs to know.
Every problem found here (a missing input file or column, a bad parameter value, an output
that cannot be reused, an ambiguous input name, a model of another kind than the registered
one it would replace) is a ConfigError: exit status 2 and no run.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from luigiflow import caching, models, records, registry, schema
from luigiflow.config import DATASET_SECTION, PATH_SECTION, Config, ConfigError, resolved_config
from luigiflow.context import (
    COPIED,
    DEFERRED,
    PENDING_RUN,
    REUSED,
    RUN,
    SHARED,
    SKIPPED,
    RunContext,
    TaskPlan,
)  # fmt: skip
from luigiflow.dataset import TRAIN_FILE, Dataset, DatasetError, read_train, resolve
from luigiflow.formats import BrokenOutput
from luigiflow.names import recorded_manifest_digest
from luigiflow.redact import redact_uri
from luigiflow.settings import Settings
from luigiflow.store import check_location
from luigiflow.targets import TaskFolder, client, run_artifact_uri
from luigiflow.task import (
    InputFile,
    PipelineTask,
    ambiguity,
    install_for_planning,
    unqualified_loads,
)  # fmt: skip

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class CacheOptions:
    enabled: bool = True  # look for earlier outputs with the same fingerprint
    force: frozenset[str] = frozenset()  # rerun these tasks and what depends on them
    allow_mismatch: bool = False  # accept a [PathConfig] source made with another config
    copy: bool = False  # copy reused outputs into the new run


@dataclass
class Plan:
    tasks: list[PipelineTask]  # upstream first, with a placeholder run id
    context: RunContext
    dataset: Dataset | None = None  # [Dataset] as resolved, when the config has one
    notes: list[str] = field(default_factory=list)  # to say before the run, none fatal

    @property
    def root(self) -> str:
        return self.context.root


@dataclass(frozen=True)
class SweepChild:
    """What a sweep's child is planned with: the tasks earlier children will make, by
    fingerprint digest (-> `runs:/<child>/<Task>`, and who that child is, in words)."""

    shared: dict[str, tuple[str, str]] = field(default_factory=dict)


def make_plan(
    task_class: type[PipelineTask],
    config: Config,
    settings: Settings,
    options: CacheOptions = CacheOptions(),
    child: SweepChild | None = None,
) -> Plan:
    """Check every task of the pipeline, fingerprint it, and decide what runs and what is
    reused; in a sweep's child (`child`), also what another child makes and what is left to
    the sweep's parent."""
    dataset, train = _resolve_dataset(config)
    tasks = _upstream_first(task_class(run_id=PENDING_RUN))
    families = [t.task_family for t in tasks]
    for name in options.force:
        if name not in families:
            message = f"{name} is not part of this pipeline"
            raise ConfigError("--force", message, choices=families, name=name)
    for task in tasks:
        try:
            _check_inputs(task, config)
        except DatasetError as error:  # a task reads [Dataset], and luigi.toml has none
            raise ConfigError(config.path, str(error), DATASET_SECTION, error.key) from None
        _check_loads(task, config)

    fingerprints = caching.Fingerprints(config.input_dir, dataset and dataset.as_config())
    entries = {
        t.task_family: TaskPlan(t.task_family, [d.task_family for d in t.upstream()]) for t in tasks
    }
    _explicit_reuse(tasks, entries, fingerprints, config, settings, options)
    _decide(tasks, entries, fingerprints, options, child)
    _complete_entries(tasks, entries, fingerprints, config, options)
    _locate_skipped(tasks, entries)
    notes = _check_registrations(tasks, entries, config, dataset, train)
    resolved = resolved_config(config, tasks)
    if dataset is not None:  # as resolved: inferred values written out
        resolved[DATASET_SECTION] = dataset.as_config()
    context = RunContext(
        root=task_class.get_task_family(),
        input=config.paths.get("input", "input"),
        config=resolved,
        tasks=entries,
        scheduler=redact_uri(settings.scheduler_url),
    )
    return Plan(tasks, context, dataset, notes)


def _complete_entries(tasks, entries, fingerprints, config: Config, options) -> None:
    """Once decided: the values of the tasks that will run checked, fingerprints and code
    digests recorded, reused outputs to copy marked."""
    for task in tasks:
        entry = entries[task.task_family]
        if entry.decision in (RUN, DEFERRED):
            # Only the tasks that will run: a reused task's values made its outputs already,
            # and checking them can be costly (Trainer imports its estimator).
            for key, problem in task.validate().items():
                raise ConfigError(config.path, problem, task.task_family, key)
        if entry.decision in (RUN, DEFERRED, SHARED):
            entry.fingerprint = fingerprints.of(task).as_dict()
        if entry.decision in (RUN, COPIED) or entry.cached:
            entry.modules = caching.modules_of(type(task))
        if entry.decision in (REUSED, COPIED) and options.copy:
            entry.decision = COPIED


def _check_registrations(tasks, entries, config: Config, dataset, train) -> list[str]:
    """A task that will register a model (in this run, or for a sweep's winner) must give its
    registered name the kind of model that name holds: what the Trainer would make of this
    `[Dataset]` and train.csv is compared with the alias's holder. Returns the notes."""
    notes: list[str] = []
    if dataset is None:  # no columns to tell the model from before the run: registering checks
        return notes
    for task in tasks:
        destination = task.registers()
        if destination is None or entries[task.task_family].decision not in (RUN, DEFERRED):
            continue
        comparison = registry.compare_with_holder(
            destination.name, destination.alias, lambda: schema.expected(dataset, train)
        )
        notes += [comparison.note] if comparison.note else []
        if comparison.differences and not destination.replace_schema:
            refusal = registry.refusal(comparison, destination)
            raise ConfigError(config.path, refusal, destination.section)
    return notes


def _resolve_dataset(config: Config) -> tuple[Dataset | None, pd.DataFrame | None]:
    """`[Dataset]` completed from train.csv, and installed for the tasks planned before the
    run exists (a task of a run reads its run's, from the run context); with train.csv as
    read for it."""
    if not config.dataset:
        install_for_planning(None)
        return None, None
    path = config.input_dir / TRAIN_FILE
    if not path.is_file():
        message = f"{TRAIN_FILE} not found in {config.input_dir}"
        raise ConfigError(config.path, message, PATH_SECTION, "input")
    _header(_decoded(path, "utf-8", config), path, config)  # readable, with rows
    train = read_train(path)
    try:
        dataset = resolve(config.dataset, train)
    except DatasetError as error:
        raise ConfigError(config.path, str(error), DATASET_SECTION, error.key) from None
    install_for_planning(dataset)
    return dataset, train


def _explicit_reuse(tasks, entries, fingerprints, config, settings, options) -> None:
    """`[PathConfig]` sources: complete outputs of the right task, made with this config."""
    explicit = {
        t.task_family: config.reuse[t.task_family] for t in tasks if t.task_family in config.reuse
    }
    forced = _with_downstream(tasks, options.force)
    recorded = {}
    for family, source in explicit.items():
        if family in forced:  # the plan decides: a forced task ignores its [PathConfig] entry
            continue
        recorded[family] = _check_reusable(family, source, config, settings).get("fingerprint", {})
        fingerprints.sources[family] = recorded[family].get("digest", "")
        entries[family].decision, entries[family].source = REUSED, source
        entries[family].fingerprint = recorded[family]
    # Only once every source is known: a source's expected fingerprint builds on those below it.
    for family in recorded:
        expected = fingerprints.of(next(t for t in tasks if t.task_family == family))
        if recorded[family].get("digest") == expected.digest:
            continue
        differences = ", ".join(expected.differences(recorded[family]))
        if not options.allow_mismatch:
            raise ConfigError(
                config.path,
                f"{explicit[family]} was made with another config or input: {differences} "
                "(reuse it anyway with --allow-mismatch)",
                PATH_SECTION,
                family,
            )
        entries[family].mismatch = differences


def _decide(tasks, entries, fingerprints, options, child: SweepChild | None) -> None:
    """From the requested task down: reuse what can be, run the rest, skip what is not needed."""
    forced = _with_downstream(tasks, options.force)
    experiments = caching.searchable_experiments(client()) if options.enabled else []
    needed = {tasks[-1].task_family}
    if child is not None:
        _defer(tasks, entries, fingerprints, needed)
    for task in reversed(tasks):  # every task after all the tasks that require it
        family, entry = task.task_family, entries[task.task_family]
        if entry.decision == DEFERRED:
            continue
        if family not in needed:
            entry.decision = SKIPPED
            continue
        if entry.decision == REUSED:
            continue
        maker = child.shared.get(fingerprints.of(task).digest) if child else None
        if maker is not None:  # another child of the sweep makes it (and what it needs)
            entry.decision, entry.source = SHARED, maker[0]
            entry.reason = f"made once for the sweep, by {maker[1]}"
            needed.update(entry.upstream)
            continue
        rejected: list[str] = []
        if options.enabled and family not in forced:
            digest = fingerprints.of(task).digest
            lookup = caching.find_reusable(client(), experiments, family, digest)
            run_id, rejected = lookup.run_id, lookup.rejected
            if run_id:
                entry.decision, entry.source, entry.cached = (
                    REUSED,
                    f"runs:/{run_id}/{family}",
                    True,
                )
                entry.fingerprint = fingerprints.of(task).as_dict()
                fingerprints.sources[family] = digest
                continue
        needed.update(entry.upstream)
        entry.reason = _why_run(
            task, family in forced, options, rejected, experiments, fingerprints
        )


def _why_run(task, forced: bool, options, rejected: list[str], experiments, fingerprints) -> str:
    if forced:
        return "forced (--force)"
    if not options.enabled:
        return "cache disabled (--no-cache)"
    if rejected:
        return f"earlier outputs failed verification: {rejected[0]}"
    return caching.why_run(client(), experiments, fingerprints.of(task))


def _defer(tasks, entries, fingerprints, needed: set[str]) -> None:
    """In a sweep's child, a task that publishes is left to the parent, which runs it for the
    winner on what it needs: so that is needed in every child. What follows it in the child
    does not wait for it, and its fingerprint says so (set before any is computed on it)."""
    for task in tasks:
        if task.publishes:
            entry = entries[task.task_family]
            entry.decision, entry.reason = DEFERRED, "left to the sweep, for its winner"
            needed.update(entry.upstream)
            digest = fingerprints.of(task).digest
            fingerprints.sources[task.task_family] = caching.deferred(digest)


def _locate_skipped(tasks: list[PipelineTask], entries: dict[str, TaskPlan]) -> None:
    """A task skipped because a later task is reused has outputs all the same: the ones that
    later task was made from, as its manifest records (found downstream first)."""
    recorded: dict[str, str] = {}
    for task in reversed(tasks):
        entry = entries[task.task_family]
        if entry.decision == SKIPPED:
            entry.source = recorded.get(entry.family)
        if entry.decision in (RUN, SHARED) or not entry.source:
            continue
        manifest = TaskFolder.from_source(entry.source).manifest() or {}
        if entry.decision == SKIPPED:
            entry.fingerprint = manifest.get("fingerprint", {})
        for upstream, source in manifest.get("upstream", {}).items():
            recorded.setdefault(upstream, source)  # the nearest downstream task's record


def _upstream_first(root: PipelineTask) -> list[PipelineTask]:
    ordered: list[PipelineTask] = []

    def visit(task: PipelineTask) -> None:
        if any(t.task_family == task.task_family for t in ordered):
            return
        for upstream in task.upstream():
            visit(upstream)
        ordered.append(task)

    visit(root)
    return ordered


def _with_downstream(tasks: list[PipelineTask], families: frozenset[str]) -> set[str]:
    found = set(families)
    for task in tasks:  # upstream first, so a task's requirements are decided before it
        if any(dep.task_family in found for dep in task.upstream()):
            found.add(task.task_family)
    return found


def _check_loads(task: PipelineTask, config: Config) -> None:
    """A name that two upstream tasks make must be loaded with `of=`: refused before the run."""
    for name in sorted(unqualified_loads(type(task))):
        makers = task.makers_of(name)
        if len(makers) > 1:
            raise ConfigError(
                config.path, ambiguity(task.task_family, name, makers), task.task_family
            )


def _check_inputs(task: PipelineTask, config: Config) -> None:
    """The input files of one task: present, readable in their encoding, with a header, rows
    and the columns the task needs."""
    for input_file in task.input_files().values():
        path = config.input_dir / input_file.filename
        if not path.is_file():
            message = f"{input_file.filename} not found in {config.input_dir}"
            raise ConfigError(config.path, message, PATH_SECTION, "input")
        text = _decoded(path, input_file.encoding, config)
        header = _header(text, path, config)
        for column in input_file.columns:
            if column not in header:
                params = task.significant_params()
                key = next(
                    (k for k, v in params.items() if f'"{column}"' in v or v == column), None
                )
                raise ConfigError(
                    config.path,
                    f"{path} has no column '{column}'",
                    task.task_family,
                    key,
                    choices=header,
                    name=column,
                )
        if input_file.target:
            _check_target(text, path, input_file, config)


def _check_target(text: str, path: Path, input_file: InputFile, config: Config) -> None:
    """The target column's values must suit the problem type: present on every row; two
    values for a binary target and at least two for a multiclass one (a split stratifies by
    them, a classifier needs two classes); numbers for a regression."""
    import pandas as pd

    column, problem = input_file.target, input_file.problem
    raw = pd.read_csv(io.StringIO(text), usecols=[column], dtype=str, keep_default_na=False)
    values = raw[column].str.strip()
    # What pandas reads as missing (NA, null, nan...) is missing here too, as the tasks see it.
    missing = pd.read_csv(io.StringIO(text), usecols=[column], dtype=str)[column].isna()
    missing |= values == ""
    where = f"{path} column '{column}': a {problem} target"

    def refuse(message: str) -> ConfigError:
        return ConfigError(config.path, f"{where} {message}", PATH_SECTION, "input")

    def first(bad: pd.Series, what: str) -> str:
        line, value = int(bad.index[0]) + 2, bad.iloc[0]
        found = f"line {line} has no value" if value == "" else f"line {line} has '{value}'"
        found += " (read as missing)" if value != "" and what.endswith("row") else ""
        return f"{what}; {found}" + (f" ({len(bad)} such rows)" if len(bad) > 1 else "")

    if missing.any():
        raise refuse(first(values[missing], "needs a value on every row"))
    if problem == "regression":
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
        if len(bad):
            raise refuse(first(bad, "is a number"))
        return
    counts = values.value_counts()
    if len(counts) < 2:
        raise refuse(f"needs at least two classes; all rows are {counts.index[0]}")
    if problem == "multiclass" and len(counts) == 2:
        raise refuse('has only two classes: set [Dataset] problem_type = "binary"')
    if problem == "binary" and len(counts) > 2:
        found = ", ".join(
            f"'{value}' ({n} row{'s' * (n != 1)})" for value, n in counts.head(5).items()
        )
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        raise refuse(
            f"takes two values, not {len(counts)}: {found}{more} "
            '(or set [Dataset] problem_type = "multiclass")'
        )


def _decoded(path: Path, encoding: str, config: Config) -> str:
    """The whole file as text (read once for every check): it must decode in its encoding,
    or the line of the first bad byte is named. A byte-order mark is dropped."""
    data = path.read_bytes()
    try:
        return data.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        message = (
            f"{path} line {line}: not valid {encoding} ({error.reason}); save it as UTF-8, "
            "or name its encoding in the task's InputFile(encoding=...)"
        )
        raise ConfigError(config.path, message, PATH_SECTION, "input") from None


def _header(text: str, path: Path, config: Config) -> list[str]:
    """The column names of a CSV file's text, which must hold at least one row."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(config.path, f"{path} is empty", PATH_SECTION, "input")
    if len(lines) == 1:
        message = f"{path} has a header but no rows"
        raise ConfigError(config.path, message, PATH_SECTION, "input")
    return next(csv.reader(lines[:1]))


def _check_reusable(family: str, source: str, config: Config, settings: Settings) -> dict:
    """A `[PathConfig]` source must hold complete, verified outputs of that task; returns its
    manifest. Outputs of a run are verified against the digest that run recorded; a plain
    folder only against its own manifest (nobody else vouches for it)."""
    folder = TaskFolder.from_source(source)

    def refuse(message: str) -> ConfigError:
        return ConfigError(config.path, message, PATH_SECTION, family)

    recorded = None
    if folder.run_id is not None:
        recorded = _recorded_digest(folder, settings, refuse)
    elif settings.embedded_store and folder.folder.resolve().is_relative_to(
        settings.artifact_root.resolve()
    ):  # a run's folder: only its run can vouch for it, so name the run
        raise refuse(f"{source} is a run's artifact folder: give runs:/<run_id>/{family}")
    manifest = folder.manifest()
    if manifest is None:
        raise refuse(f"{source} holds no complete outputs (the task did not finish there)")
    if manifest.get("task") != family:
        raise refuse(f"{source} holds outputs of {manifest.get('task')}, not {family}")
    try:
        models.verify_outputs(folder, recorded)
    except BrokenOutput as error:
        raise refuse(f"not used: {error}") from None
    return manifest


def _recorded_digest(folder: TaskFolder, settings: Settings, refuse) -> str:
    """The manifest digest a source run recorded, once the run is found fit to reuse from."""
    try:
        run = client().get_run(folder.run_id)
    except MlflowException:
        raise refuse(f"run {folder.run_id} not found in the tracking store") from None
    if run.info.lifecycle_stage != "active":
        raise refuse(f"run {folder.run_id} is deleted")
    check_location(run_artifact_uri(folder.run_id), settings)
    recorded = recorded_manifest_digest(run.data.tags, folder.name)
    if recorded is None:
        record = records.read(folder.run_id, folder.name)
        if record is not None and record.status != records.FINISHED:
            raise refuse(
                f"{folder.name} {record.status} in run {folder.run_id}: "
                "its outputs cannot be reused"
            )
        raise refuse(f"runs:/{folder.run_id}/{folder.name} has no recorded manifest digest")
    return recorded
