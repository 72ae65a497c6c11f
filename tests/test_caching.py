"""Automatic reuse, end to end through the runner: what reruns, what is reused, and why."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    artifacts,
    edit_task,
    planned,
    reused_from,
    run_runner,
    runner_env,
    runs,
    store,
    task_statuses,
)

pytestmark = pytest.mark.slow
TASKS = ("Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction")
FROM_TRAINER = {"Trainer", "Evaluator", "Register", "Prediction"}  # Trainer and downstream


def ran(run, client=None) -> set[str]:
    return {t for t, status in task_statuses(run, client).items() if status == "FINISHED"}


def reused(run, client=None) -> dict[str, str]:
    return {t: source for t, source in reused_from(run, client).items() if t in TASKS}


def dry_run(project: Path, *args: str, env=None) -> dict[str, str]:
    """The verdict per task of `--dry-run`, and check that it created no run."""
    before = len(runs(project)) if env is None else None
    result = run_runner(project, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    if before is not None:
        assert len(runs(project)) == before, "a dry run creates no run"
    verdicts = {}
    for line in result.stdout.splitlines()[1:]:
        task, verdict = line.split(maxsplit=1)
        verdicts[task] = verdict.split("   (needs")[0]
    return verdicts


def latest_run(project: Path, *args: str):
    result = run_runner(project, *args)
    assert result.returncode == 0, result.stderr
    return runs(project)[0], result.stdout


@pytest.fixture
def first(project, first_run):
    """The project after one cold run: every later case compares with it."""
    assert ran(first_run) == set(TASKS)
    return first_run


def test_nothing_changed_reuses_everything(project):
    assert dry_run(project) == {t: "would run: no earlier run" for t in TASKS}
    first, _ = latest_run(project)
    assert ran(first) == set(TASKS)
    source = first.info.run_id
    assert dry_run(project)["Prediction"] == f"would reuse from run {source} (same fingerprint)"
    assert dry_run(project)["Trainer"] == "not needed: Prediction would be reused"
    run, stdout = latest_run(project)
    assert ran(run) == set()
    assert reused(run) == {"Prediction": f"runs:/{source}/Prediction"}
    assert re.search(
        rf"Prediction\s+reused\s+from runs:/{source}/Prediction \(same fingerprint\)", stdout
    )
    assert "Trainer        finished" not in stdout
    index = json.loads((artifacts(project, run) / "reused_outputs.json").read_text())
    link = index["Prediction"]["outputs"]["submission"]
    assert f"/runs/{source}/artifacts/Prediction/submission.csv?" in link, (
        "a fully reused run still says where its submission is"
    )


def test_description_and_worker_count_do_not_count(project, first):
    run, _ = latest_run(project, "--set", 'RunConfig.description="another note"', "--workers", "2")
    assert ran(run) == set() and "Prediction" in reused(run)


def test_a_trainer_parameter_reruns_trainer_and_prediction(project, first):
    assert dry_run(project, "--set", "Trainer.seed=3") == {
        "Preprocessor": "not needed: Splitter would be reused",
        "Splitter": f"would reuse from run {first.info.run_id} (same fingerprint)",
        "Trainer": "would run: Trainer.seed 0 → 3",
        "Evaluator": "would run: upstream Trainer changed",
        "Register": "would run: upstream Evaluator changed, upstream Trainer changed",
        "Prediction": "would run: upstream Register changed, upstream Trainer changed",
    }
    run, stdout = latest_run(project, "--set", "Trainer.seed=3")
    assert ran(run) == FROM_TRAINER
    assert reused(run) == {"Splitter": f"runs:/{first.info.run_id}/Splitter"}
    assert planned(run)["Trainer"]["reason"] == "Trainer.seed 0 → 3"
    assert re.search(r"Trainer\s+finished in [\d.]+s\s+Trainer.seed 0 → 3", stdout)


def test_a_prediction_parameter_reruns_prediction_only(project, first):
    assert dry_run(project, "--set", "Prediction.batch_size=50")["Prediction"] == (
        "would run: Prediction.batch_size 100000 → 50"
    )
    run, _ = latest_run(project, "--set", "Prediction.batch_size=50")
    assert ran(run) == {"Prediction"}
    assert set(reused(run)) == {"Trainer", "Register"}
    same = (artifacts(project, run) / "Prediction/submission.csv").read_bytes()
    assert same == (artifacts(project, first) / "Prediction/submission.csv").read_bytes()


def test_one_byte_of_input_reruns_everything(project, first):
    train = project / "input/train.csv"
    train.write_bytes(train.read_bytes().replace(b",24.0,", b",25.0,", 1))
    assert dry_run(project)["Preprocessor"] == "would run: input train.csv changed"
    run, _ = latest_run(project)
    assert ran(run) == set(TASKS)
    datasets = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"train.csv", "test.csv"}
    assert json.loads(datasets["train.csv"].source)["sha256"].startswith(
        datasets["train.csv"].digest
    )


def test_preprocessor_code_reruns_everything_but_a_comment_does_not(project, first):
    anchor = (
        "        numeric, categorical = list(data.numeric_columns), list(data.categorical_columns)"
    )
    edit_task(project, "preprocessor", anchor, "        # a comment changes nothing it makes")
    assert dry_run(project)["Prediction"].startswith("would reuse")
    edit_task(project, "preprocessor", anchor, "        raw = raw.iloc[::-1].iloc[::-1]")
    assert dry_run(project)["Preprocessor"] == "would run: code of Preprocessor changed"
    run, _ = latest_run(project)
    assert ran(run) == set(TASKS)


def test_a_deleted_source_run_is_not_reused(project, first):
    store(project).delete_run(first.info.run_id)
    assert dry_run(project)["Preprocessor"] == "would run: no earlier run"
    run, _ = latest_run(project)
    assert ran(run) == set(TASKS)


def test_outputs_removed_from_the_store_are_not_reused(project, first):
    """What `mlflow gc` does to a deleted run's artifacts, here to a live run's."""
    import shutil

    shutil.rmtree(artifacts(project, first))
    gone = f"would run: outputs of run {first.info.run_id} are gone"
    assert dry_run(project) == {t: gone for t in TASKS}
    run, _ = latest_run(project)
    assert ran(run) == set(TASKS)


def test_force_reruns_a_task_and_what_depends_on_it(project, first):
    run, _ = latest_run(project, "--force", "Trainer")
    assert ran(run) == FROM_TRAINER and set(reused(run)) == {"Splitter"}
    run, _ = latest_run(project, "--no-cache")
    assert ran(run) == set(TASKS)
    explicit = f'PathConfig.Trainer="runs:/{first.info.run_id}/Trainer"'
    run, _ = latest_run(project, "--force", "Trainer", "--set", explicit)
    assert ran(run) == FROM_TRAINER, "--force wins over [PathConfig]"
    result = run_runner(project, "--force", "Trainr")
    assert result.returncode == 2 and "'Trainer'" in result.stderr


def test_copy_reused_puts_the_outputs_in_the_new_run(project, first):
    run, stdout = latest_run(project, "--copy-reused")
    assert ran(run) == set()
    copied = artifacts(project, run) / "Prediction"
    assert (copied / "submission.csv").read_bytes() == (
        artifacts(project, first) / "Prediction/submission.csv"
    ).read_bytes()
    assert json.loads((copied / "_manifest.json").read_text())["copied_from"].endswith(
        "/Prediction"
    )
    assert re.search(r"Prediction\s+copied\s+from runs:/", stdout)


def test_the_newest_of_two_hits_is_used(project, first):
    second, _ = latest_run(project, "--no-cache")
    run, _ = latest_run(project)
    assert reused(run) == {"Prediction": f"runs:/{second.info.run_id}/Prediction"}


def test_explicit_reuse_made_with_another_config_is_refused(project, first):
    source = f'PathConfig.Trainer="runs:/{first.info.run_id}/Trainer"'
    result = run_runner(project, "--set", source, "--set", "Trainer.seed=5")
    assert result.returncode == 2
    assert "Trainer.seed 0 → 5" in result.stderr and "--allow-mismatch" in result.stderr
    run, _ = latest_run(project, "--set", source, "--set", "Trainer.seed=5", "--allow-mismatch")
    assert planned(run)["Trainer"]["mismatch"] == "Trainer.seed 0 → 5"
    # What is built on the reused model is fingerprinted on that model (seed 0), not on the
    # config's seed 5: so the first run's predictions, made from the same model, are reused.
    assert ran(run) == set()
    assert reused(run) == {"Prediction": f"runs:/{first.info.run_id}/Prediction"}


def test_a_failed_trainer_leaves_its_upstream_reusable(project):
    bad = run_runner(project, "--set", "Trainer.cv_folds=5000")
    assert bad.returncode == 1
    failed = runs(project)[0]
    run, _ = latest_run(project)
    assert reused(run) == {"Splitter": f"runs:/{failed.info.run_id}/Splitter"}
    assert ran(run) == FROM_TRAINER


def test_reuse_through_a_tracking_server(project, mlflow_server):
    """A colleague's runs on the same server are reused too: the server is the index."""
    from mlflow import MlflowClient

    env = runner_env(MLFLOW_TRACKING_URI=mlflow_server)
    args = ("--set", 'RunConfig.experiment_name="cache on server"')
    client = MlflowClient(mlflow_server)

    def server_run(*extra):
        result = run_runner(project, *args, *extra, env=env)
        assert result.returncode == 0, result.stderr
        experiment = client.get_experiment_by_name("cache on server")
        return client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time DESC"]
        )[0]

    first = server_run("--set", "Trainer.seed=7")
    assert ran(first, client) == set(TASKS)
    assert dry_run(project, *args, "--set", "Trainer.seed=7", env=env)["Prediction"].startswith(
        "would reuse"
    )
    again = server_run("--set", "Trainer.seed=7")
    assert ran(again, client) == set() and "Prediction" in reused(again, client)
    changed = server_run("--set", "Trainer.seed=8")
    assert ran(changed, client) == FROM_TRAINER and set(reused(changed, client)) == {"Splitter"}
    client.delete_run(first.info.run_id)
    client.delete_run(again.info.run_id)
    client.delete_run(changed.info.run_id)
    fresh = server_run("--set", "Trainer.seed=7")
    assert ran(fresh, client) == set(TASKS), "deleted runs are never reused"
