"""The pipeline about to run, worked out and checked before any MLflow run exists.

From the requested task down, every task whose output is needed is looked at. A task whose
output can be reused, named in `[PathConfig]` or found in the tracking store by its
fingerprint, counts as complete, so what lies below it is not needed. The result is the run
context (`runstate.RunContext`): written with the run, all any process needs to know. Every
problem found here (a missing or untrusted input file, a bad value, an output that cannot be
reused, an ambiguous input name, a model of another kind than the one it would replace) is a
ConfigError: exit status 2 and no run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from luigi.freezing import recursively_unfreeze

from luigiflow import caching, reasons, registry
from luigiflow.config import (
    DATASET_SECTION,
    PATH_SECTION,
    RUN_SECTION,
    SWEEP_SECTION,
    Config,
    ConfigError,
)
from luigiflow.inputs import Dataset, InputError, check_files, resolve_dataset
from luigiflow.redact import (
    MASK,
    URI_CREDENTIALS_REFUSED,
    Redactor,
    holds_uri_credentials,
    is_secret_key,
    redact_uri,
)
from luigiflow.runstate import (
    COPIED,
    DEFERRED,
    REUSED,
    RUN,
    SHARED,
    SKIPPED,
    RunContext,
    TaskPlan,
    draft,
)  # fmt: skip
from luigiflow.settings import Settings
from luigiflow.sourcecode import unqualified_loads
from luigiflow.store import client
from luigiflow.targets import TaskFolder
from luigiflow.task import PipelineTask, ambiguity
from luigiflow.values import native


@dataclass(frozen=True)
class CacheOptions:
    enabled: bool = True  # look for earlier outputs with the same fingerprint
    force: frozenset[str] = frozenset()  # rerun these tasks and what depends on them
    allow_mismatch: bool = False  # accept a [PathConfig] source made with another config
    copy: bool = False  # copy reused outputs into the new run
    forced_because: str = "forced (--force)"  # what a forced task says: the runner may force


@dataclass
class Plan:
    tasks: list[PipelineTask]  # upstream first, built under the plan's draft run id
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
    try:
        dataset, train = resolve_dataset(config.dataset, config.input_dir, settings.project_root)
    except InputError as error:
        raise _located(error, config) from None
    values = config.task_sections()
    if dataset is not None:  # as resolved: inferred values written out
        values[DATASET_SECTION] = dataset.as_config()
    draft_id = draft(values, task_class.get_task_family(), config.paths.get("input", "input"))
    tasks = _upstream_first(task_class(run_id=draft_id))
    families = [t.task_family for t in tasks]
    for name in options.force:
        if name not in families:
            message = f"{name} is not part of this pipeline"
            raise ConfigError("--force", message, choices=families, name=name)
    for task in tasks:
        try:  # a DatasetError here: a task reads [Dataset], and luigi.toml has none
            check_files(task, config.input_dir, settings.project_root)
        except InputError as error:
            raise _located(error, config) from None
        _check_loads(task, config)
    implied = {t.task_family: t.implied_values() for t in tasks}
    if any(implied.values()):  # built again, with what the data implies written in
        values = {**values, **{f: {**values.get(f, {}), **v} for f, v in implied.items() if v}}
        draft_id = draft(values, task_class.get_task_family(), config.paths.get("input", "input"))
        tasks = _upstream_first(task_class(run_id=draft_id))

    fingerprints = caching.Fingerprints(config.input_dir, dataset and dataset.as_config())
    entries = {
        t.task_family: TaskPlan(t.task_family, [d.task_family for d in t.upstream()]) for t in tasks
    }
    _explicit_reuse(tasks, entries, fingerprints, config, settings, options)
    _decide(tasks, entries, fingerprints, options, child, config.run.get("experiment_name"))
    _complete_entries(tasks, entries, fingerprints, config, options)
    _locate_skipped(tasks, entries)
    registering = [t for t in tasks if entries[t.task_family].decision in (RUN, DEFERRED)]
    try:
        notes = registry.check_before_run(registering, dataset, train)
    except registry.Refused as refused:
        raise ConfigError(config.path, str(refused), refused.section) from None
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


def _located(error: InputError, config: Config) -> ConfigError:
    """An input's problem, as a mistake of the config file to change."""
    where = (error.section, error.key)
    return ConfigError(config.source(*where), str(error), *where, error.choices, error.name)


def resolved_config(config: Config, tasks: Iterable[PipelineTask]) -> dict[str, dict[str, object]]:
    """Every value the run uses, defaults included, natively: the run context, logged as the
    run's config (loadable with --config) and params. Secrets stay references; the run's note,
    name and tags are masked (only the runner reads them, from its config)."""
    run = {k: v for k, v in config.run.items() if v not in ("", {}, None)}
    resolved: dict[str, dict[str, object]] = {RUN_SECTION: Redactor().mapping(run)}
    resolved[PATH_SECTION] = dict(config.paths)
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


def _task_values(task: PipelineTask, config: Config) -> dict[str, object]:
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
            raise ConfigError(source, URI_CREDENTIALS_REFUSED)
        values[name] = native(param, value)
    return values


def _complete_entries(tasks, entries, fingerprints, config: Config, options) -> None:
    """Once decided: the values of the tasks that will run checked, fingerprints and code
    digests recorded, reused outputs to copy marked."""
    for task in tasks:
        entry = entries[task.task_family]
        if entry.decision in (RUN, DEFERRED):
            # Only the tasks that will run: a reused task's values made its outputs already,
            # and checking them can be costly (Trainer imports its estimator).
            for key, problem in task.validate().items():
                raise ConfigError(
                    config.source(task.task_family, key), problem, task.task_family, key
                )
        if entry.decision in (RUN, DEFERRED, SHARED):
            entry.fingerprint = fingerprints.of(task).as_dict()
        if entry.decision in (RUN, COPIED) or entry.cached:
            entry.modules = caching.modules_of(type(task))
        if entry.decision in (REUSED, COPIED) and options.copy:
            entry.decision = COPIED


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
        manifest = caching.check_reusable(family, source, config, settings)
        recorded[family] = manifest.get("fingerprint", {})
        fingerprints.sources[family] = recorded[family].get("digest", "")
        entries[family].decision, entries[family].source = REUSED, source
        entries[family].fingerprint = recorded[family]
    # Only once every source is known: a source's expected fingerprint builds on those below it.
    for family in recorded:
        expected = fingerprints.of(next(t for t in tasks if t.task_family == family))
        if recorded[family].get("digest") == expected.digest:
            continue
        differences = ", ".join(reasons.differences(expected, recorded[family]))
        if not options.allow_mismatch:
            raise ConfigError(
                config.path,
                f"{explicit[family]} was made with another config or input: {differences} "
                "(reuse it anyway with --allow-mismatch)",
                PATH_SECTION,
                family,
            )
        entries[family].mismatch = differences


def _decide(tasks, entries, fingerprints, options, child: SweepChild | None, home) -> None:
    """From the requested task down: reuse what can be, run the rest, skip what is not needed;
    then say why each task runs (once what it is built on is decided)."""
    forced = _with_downstream(tasks, options.force)
    experiments = caching.searchable_experiments(client()) if options.enabled else []
    needed = {tasks[-1].task_family}
    if child is not None:
        _defer(tasks, entries, fingerprints, needed)
    rejected: dict[str, list[str]] = {}  # the tasks that run -> earlier outputs refused
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
        rejected[family] = []
        if options.enabled and family not in forced:
            digest = fingerprints.of(task).digest
            lookup = caching.find_reusable(client(), experiments, family, digest)
            rejected[family] = lookup.rejected
            if lookup.run_id:
                entry.decision, entry.source, entry.cached = (
                    REUSED,
                    f"runs:/{lookup.run_id}/{family}",
                    True,
                )
                entry.fingerprint = fingerprints.of(task).as_dict()
                fingerprints.sources[family] = digest
                del rejected[family]
                continue
        needed.update(entry.upstream)
    explain = reasons.Explain(client(), experiments, home, options.forced_because)
    explain.each(tasks, entries, fingerprints, forced if options.enabled else None, rejected)


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
