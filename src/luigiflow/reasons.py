"""Why a task runs, in words: what the user reads first about a task that was not reused.

A task runs when no earlier output has its fingerprint, so the honest answer is what differs
from the run a user would compare with: the newest earlier run of that task in the same
experiment, or, when the experiment has none, in another one, named. The change that matters
comes first (the task's own values, then its code, its input files, what it is built on), and
what every task shares ([Dataset], library versions) last. An upstream task counts as changed
only when it reruns in this plan; one reused from an older run, or left to a sweep's parent,
says so instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from luigiflow.caching import Fingerprint, runs_with
from luigiflow.runstate import COPIED, DEFERRED, REUSED, SKIPPED, TaskPlan
from luigiflow.targets import TaskFolder

EMPTY = "(empty)"


@dataclass
class Explain:
    """What the plan says of each task it runs, once everything is decided."""

    client: MlflowClient
    experiments: list[str]  # where earlier runs are looked for
    home: object  # the name of the experiment the run will be in
    forced_because: str  # what a forced task says

    def each(self, tasks, entries, fingerprints, forced: set[str] | None, rejected) -> None:
        """Each task in `rejected` (the earlier outputs refused, by task) runs: say why.
        `forced`: the tasks forced to run; None: with the cache disabled, every task."""
        home_id = experiment_id(self.client, self.home) if self.experiments else None
        for task in tasks:
            family = task.task_family
            if family not in rejected:
                continue
            if forced is None:
                reason = "cache disabled (--no-cache)"
            elif family in forced:
                reason = self.forced_because
            elif rejected[family]:
                reason = f"earlier outputs failed verification: {rejected[family][0]}"
            else:
                fingerprint = fingerprints.of(task)
                reason = why_run(self.client, self.experiments, home_id, fingerprint, entries)
            entries[family].reason = reason


def why_run(
    client: MlflowClient,
    experiments: list[str],
    home: str | None,
    fingerprint: Fingerprint,
    upstream: Mapping[str, TaskPlan] | None = None,
) -> str:
    """Why the task must run, against its newest earlier run in experiment `home` (an id), or
    in the other `experiments` when `home` has none; `upstream`: the plan's other tasks."""
    others = [e for e in experiments if e != home]
    earlier, elsewhere = _newest(client, [home] if home in experiments else [], fingerprint), ""
    if earlier is None:
        earlier = _newest(client, others, fingerprint)
        if earlier is None:
            return "no earlier run"
        name = _experiment_name(client, earlier.info.experiment_id)
        elsewhere = f"vs '{name}' run {earlier.info.run_id[:8]}: "  # none in this experiment
    run_id = earlier.info.run_id
    manifest = _manifest(run_id, fingerprint.task)
    recorded = (manifest or {}).get("fingerprint", {})
    if manifest is None or recorded.get("digest") == fingerprint.digest:
        return f"outputs of run {run_id} are gone"
    return elsewhere + ", ".join(differences(fingerprint, recorded, upstream))


def differences(
    fingerprint: Fingerprint, earlier: dict, upstream: Mapping[str, TaskPlan] | None = None
) -> list[str]:
    """What differs from an earlier fingerprint (from a manifest), the task's own first."""
    own, shared = [], []
    old_params = earlier.get("params", {})
    for key in sorted(set(old_params) | set(fingerprint.params)):
        old, new = old_params.get(key, "(unset)"), fingerprint.params.get(key, "(unset)")
        if old != new:
            dataset = key.startswith("Dataset.")
            name = key if dataset else f"{fingerprint.task}.{key}"
            (shared if dataset else own).append(f"{name} {_brief(old)} → {_brief(new)}")
    if earlier.get("code") != fingerprint.code:
        own.append(f"code of {fingerprint.task} changed")
    old_inputs = earlier.get("inputs", {})
    for name in sorted(set(old_inputs) | set(fingerprint.inputs)):
        if old_inputs.get(name) != fingerprint.inputs.get(name):
            own.append(f"input {name} changed")
    old_upstream = earlier.get("upstream", {})
    for name in sorted(set(old_upstream) | set(fingerprint.upstream)):
        if old_upstream.get(name) != fingerprint.upstream.get(name):
            own.append(_upstream_words(name, (upstream or {}).get(name)))
    old_versions = earlier.get("versions", {})
    for name in sorted(fingerprint.versions):
        if old_versions.get(name) != fingerprint.versions[name]:
            shared.append(f"{name} {old_versions.get(name, '?')} → {fingerprint.versions[name]}")
    return own + shared or ["fingerprint changed"]


def _upstream_words(name: str, entry: TaskPlan | None) -> str:
    """An upstream task whose fingerprint differs from the earlier run's, as this plan has it."""
    if entry is not None and entry.decision == DEFERRED:
        return f"upstream {name} left to the sweep's parent"
    if entry is not None and entry.decision in (REUSED, COPIED, SKIPPED) and entry.source:
        made_by = TaskFolder.from_source(entry.source).run_id or entry.source
        return f"upstream {name} reused from run {made_by}, not the earlier run's"
    return f"upstream {name} changed"


def _brief(value: str, width: int = 40) -> str:
    """A parameter's value as the reasons show it: an empty one said, long ones cut short."""
    if value in ("", '""', "''"):
        return EMPTY
    return value if len(value) <= width else value[: width - 1] + "…"


def _newest(client: MlflowClient, experiments: list[str], fingerprint: Fingerprint):
    runs = runs_with(client, experiments, fingerprint.task, "LIKE '%'", max_results=1)
    return runs[0] if runs else None


def experiment_id(client: MlflowClient, name: object) -> str | None:
    """The id of the experiment named `name`, if it exists yet (a plan precedes its run)."""
    experiment = client.get_experiment_by_name(str(name)) if name else None
    return experiment.experiment_id if experiment else None


def _experiment_name(client: MlflowClient, experiment_id: str) -> str:
    try:
        return client.get_experiment(experiment_id).name
    except MlflowException:
        return experiment_id


def _manifest(run_id: str, family: str) -> dict | None:
    try:
        return TaskFolder(run_id, family).manifest()
    except (OSError, MlflowException):  # artifacts removed (`mlflow gc`) or unreachable
        return None
