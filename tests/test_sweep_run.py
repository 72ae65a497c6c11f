"""Sweeps end to end: a parent run, a child run per combination, shared work done once, the
children compared and the winner alone registered."""

from __future__ import annotations

import re
import shlex

import pandas as pd
import pytest
from conftest import REPO, artifacts, reused_from, run_runner, runs, store, task_statuses

from luigiflow.runstate import RunContext

pytestmark = pytest.mark.slow

C_VALUES = "Trainer.estimator_params={max_iter=1000,C=0.01},{max_iter=1000,C=1}"


def sweep_runs(project) -> tuple:
    """The newest sweep's parent and its children, in the order of their combinations."""
    every = runs(project)
    parent = next(r for r in every if "luigiflow.sweep" in r.data.tags)
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(children, key=lambda r: r.info.start_time)


def ran(run) -> set[str]:
    """The tasks that ran in a run (the others were reused, shared, skipped or deferred)."""
    return set(task_statuses(run))


def test_a_sweep_of_three_seeds_makes_shared_work_once_and_registers_the_winner(project):
    result = run_runner(project, "--sweep", "Trainer.seed=0,1,2")
    assert result.returncode == 0, result.stderr
    parent, children = sweep_runs(project)
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"] * 3
    assert [c.data.tags["luigiflow.sweep.child"] for c in children] == [
        f"Trainer.seed={seed}" for seed in (0, 1, 2)
    ]
    assert [c.data.params["Trainer.seed"] for c in children] == ["0", "1", "2"]
    maker = children[0]
    assert ran(maker) == {"Preprocessor", "Splitter", "Trainer", "Evaluator", "Prediction"}
    for other in children[1:]:
        assert ran(other) == {"Trainer", "Evaluator", "Prediction"}
        for family in ("Preprocessor", "Splitter"):
            source = reused_from(other)[family]
            assert source == f"runs:/{maker.info.run_id}/{family}"
    assert "Made once and shared: Preprocessor, Splitter (by child 1)" in result.stdout

    table = pd.read_csv(artifacts(project, parent) / "sweep" / "comparison.csv")
    assert list(table["Trainer.seed"]) == [0, 1, 2]
    assert list(table["run_id"]) == [c.info.run_id for c in children]
    for row, child in zip(table.to_dict("records"), children, strict=True):
        assert row["roc_auc"] == pytest.approx(child.data.metrics["roc_auc"])
        assert row["accuracy"] == pytest.approx(child.data.metrics["accuracy"])
        assert row["validation"] == child.data.tags["luigiflow.validation"] == "VALIDATED"
    assert (artifacts(project, parent) / "sweep" / "roc_auc_by_Trainer.seed.png").is_file()
    assert (
        '"Trainer.seed" = [0, 1, 2]'
        in (artifacts(project, parent) / "config/luigi.toml").read_text()
    )
    for child in children:  # a child is one combination: --from-run <child> reruns that one
        assert "[Sweep]" not in (artifacts(project, child) / "config/luigi.toml").read_text()
    report = (artifacts(project, parent) / "report.html").read_text()
    assert "Sweep: Trainer.seed in 0, 1, 2" in report

    best = parent.data.tags["luigiflow.sweep.best_validated_child"]
    assert best in table["run_id"].tolist()
    client = store(project)
    versions = client.search_model_versions("name = 'titanic'")
    assert [v.run_id for v in versions] == [best], "the winner, and nothing else"
    assert client.get_model_version_by_alias("titanic", "champion").run_id == best
    assert "Register" in ran(parent)
    check_the_rerun_and_a_plain_run_reuse_it(project, parent, children, table)


def check_the_rerun_and_a_plain_run_reuse_it(project, parent, children, table) -> None:
    client = store(project)
    again = run_runner(project, "--from-run", parent.info.run_id)
    assert again.returncode == 0, again.stderr
    rerun, rerun_children = sweep_runs(project)
    assert rerun.info.run_id != parent.info.run_id
    assert len(rerun_children) == 3
    assert [ran(c) for c in rerun_children] == [set()] * 3, "everything reused"
    assert len(client.search_model_versions("name = 'titanic'")) == 1
    rerun_table = pd.read_csv(artifacts(project, rerun) / "sweep" / "comparison.csv")
    assert list(rerun_table["roc_auc"]) == pytest.approx(list(table["roc_auc"]))

    plain = run_runner(project, "--set", "Trainer.seed=1")  # a child's config, as a plain run
    assert plain.returncode == 0, plain.stderr
    latest = runs(project)[0]
    for family in ("Trainer", "Evaluator"):
        source = reused_from(latest)[family]
        assert source == f"runs:/{children[1].info.run_id}/{family}"
    assert ran(latest) == {"Register", "Prediction"}, "a child's Prediction did not register"


def test_the_readme_s_sweep_prints_a_line_per_child_and_its_summary_within_the_width(project):
    readme = (REPO / "docs" / "sweeps.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python src/runner.py"))
    args = shlex.split(command)[2:]
    result = run_runner(project, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 25, result.stdout
    assert max(len(line) for line in lines) <= 120, result.stdout
    assert sum(bool(re.match(r"  child \d: run [0-9a-f]{32} \(", line)) for line in lines) == 6
    assert "forced" not in result.stdout
    parent, _ = sweep_runs(project)
    context = (artifacts(project, parent) / "luigiflow" / "context.json").read_text()
    assert RunContext.from_json(context).tasks["Register"].reason == "for the winner"


def test_a_failing_child_leaves_the_others_finished_and_the_parent_failed(project):
    bad = "Trainer.cv_folds=5000,3"  # the first child fails as its Trainer runs
    result = run_runner(project, "--sweep", bad)
    assert result.returncode == 1, result.stdout
    parent, children = sweep_runs(project)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FINISHED"]
    assert task_statuses(children[0])["Trainer"] == "FAILED"
    assert "Child 1 failed: Trainer" in result.stdout
    assert "a child did not finish: nothing is registered" in result.stdout
    assert store(project).search_registered_models() == []
    table = pd.read_csv(artifacts(project, parent) / "sweep" / "comparison.csv")
    assert list(table["status"]) == ["FAILED", "FINISHED"]
    resumed = run_runner(project, "--resume", parent.info.run_id)
    assert resumed.returncode == 2
    assert f"is a sweep: run it again with --from-run {parent.info.run_id}" in resumed.stderr
    resumed = run_runner(project, "--resume", children[0].info.run_id)
    assert resumed.returncode == 2, "its shared tasks belong to other children"
    assert f"is a sweep's child: run the sweep again with --from-run {parent.info.run_id}" in (
        resumed.stderr
    )


def test_a_two_by_two_grid_with_two_workers_gives_the_results_of_one(project):
    grid = ("--sweep", C_VALUES, "--sweep", "Splitter.seed=0,1")
    one = run_runner(project, *grid)
    assert one.returncode == 0, one.stderr
    _, serial = sweep_runs(project)
    two = run_runner(project, *grid, "--workers", "2", "--no-cache")
    assert two.returncode == 0, two.stderr
    _, parallel = sweep_runs(project)
    assert len(serial) == len(parallel) == 4
    labels = [c.data.tags["luigiflow.sweep.child"] for c in parallel]
    assert labels == [c.data.tags["luigiflow.sweep.child"] for c in serial]
    assert labels[1] == "Trainer.estimator_params={ max_iter = 1000, C = 0.01 }, Splitter.seed=1"
    splitters = [c for c in parallel if "Splitter" in ran(c)]
    assert len(splitters) == 2, "one Splitter per seed, shared by two children each"
    for a, b in zip(serial, parallel, strict=True):
        assert a.data.metrics["roc_auc"] == pytest.approx(b.data.metrics["roc_auc"])
        assert (artifacts(project, a) / "Prediction/submission.csv").read_bytes() == (
            artifacts(project, b) / "Prediction/submission.csv"
        ).read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sweep", "Trainer.sed=0,1"), "[Sweep] Trainer.sed: unknown key. Did you mean 'seed'?"),
        (("--sweep", "Trainer.seed="), "expected Section.key=value,value"),
        (("--sweep", "Trainer.seed=0,-1"), "--sweep Trainer.seed [Trainer] seed"),
        (("--config", "empty-sweep.toml"), "empty-sweep.toml [Sweep] Trainer.seed: no values"),
        (("--sweep", "Trainer.seed=0,1", "--set", "Sweep.select="), "[Sweep] select"),
        (("--sweep", "Trainer.retries=0,1"), "child 2 (Trainer.retries=1) builds exactly what"),
    ],
)
def test_a_bad_sweep_exits_2_before_any_run_exists(project, args, message):
    written = (project / "luigi.toml").read_text()
    (project / "empty-sweep.toml").write_text(
        written.replace("[Sweep]", '[Sweep]\n"Trainer.seed" = []')
    )
    result = run_runner(project, *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert runs(project) == []


def test_a_dry_run_says_per_child_what_would_run_be_shared_or_deferred(project):
    result = run_runner(project, "--sweep", "Trainer.seed=0,1", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Dry run of a sweep of 2 runs: Trainer.seed in 0, 1" in out
    first, second = out.split("Child 2: Trainer.seed=1")
    assert "Child 1: Trainer.seed=0" in first
    assert "Splitter      would run: no earlier run" in first
    assert "Splitter      would be made once for the sweep, by child 1 (Trainer.seed=0)" in second
    assert "Register      deferred: left to the sweep, for its winner" in second
    assert runs(project) == []


def test_the_alias_moves_only_to_a_winner_better_than_its_holder(project):
    strong, weak = "{max_iter=1000,C=1}", "{max_iter=1000,C=0.01}"
    assert run_runner(project, "--sweep", f"Trainer.estimator_params={strong}").returncode == 0
    client = store(project)
    assert client.get_model_version_by_alias("titanic", "champion").version in (1, "1")

    result = run_runner(project, "--sweep", f"Trainer.estimator_params={weak}")
    assert result.returncode == 0, result.stderr
    assert len(client.search_model_versions("name = 'titanic'")) == 2
    assert client.get_model_version_by_alias("titanic", "champion").version in (1, "1")
    assert "@champion stays at version 1: version 1 has roc_auc" in result.stdout

    result = run_runner(
        project, "--sweep", f"Trainer.estimator_params={weak}", "--set", "Sweep.promote=always"
    )
    assert result.returncode == 0, result.stderr
    assert len(client.search_model_versions("name = 'titanic'")) == 2, "the same model"
    assert client.get_model_version_by_alias("titanic", "champion").version in (2, "2")
