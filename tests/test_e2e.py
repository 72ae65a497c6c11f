"""End to end: `python src/runner.py` as a subprocess in a fresh copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    BIN,
    KAGGLE,
    artifacts,
    copy_project,
    edit_task,
    reused_from,
    run_runner,
    runner_env,
    runs,
    start_runner,
    start_stuck_in_trainer,
    task_records,
    task_statuses,
)

pytestmark = pytest.mark.slow


def test_cold_run_logs_everything_into_one_run(tmp_path):
    project = copy_project(tmp_path / "project")  # a fresh clone: its first run makes the store
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(project)]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run([*git, *command], check=True)  # as a user's clone is
    result = run_runner(project)
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["mlflow.note.content"].startswith("Baseline")
    assert run.info.run_name == "LogisticRegression", "named after what it trains"
    assert params["Trainer.seed"] == "0" and params["RunConfig.task"] == "Prediction"
    assert params["Dataset.numeric_columns"] == '["Pclass", "Age", "SibSp", "Parch"]'
    assert 0.7 < run.data.metrics["cv_accuracy"] < 0.9

    assert_few_tags_and_full_records(run)

    root = artifacts(project, run)
    assert root.is_relative_to(project / "mlartifacts"), (
        "artifacts live in the project, not ./mlruns"
    )
    for name in (
        "Preprocessor/train.parquet",
        "Splitter/validation.parquet",
        "Trainer/model/MLmodel",
        "Evaluator/evaluation.json",
        "Prediction/submission.csv",
        "Prediction/predictions.parquet",
        "report.html",
        "config/luigi.toml",
        "logs/runner.log",
    ):
        assert (root / name).exists(), name
    submission = pd.read_csv(root / "Prediction/submission.csv")
    test = pd.read_csv(project / "input/test.csv")
    assert list(submission.columns) == ["PassengerId", "Survived"]
    assert submission["PassengerId"].tolist() == test["PassengerId"].tolist()
    assert set(submission["Survived"]) <= {0, 1}

    assert_quiet_terminal(result.stdout, run.info.run_id)
    assert "INFO" not in result.stdout + result.stderr, (
        "library logs go to the log file, not the terminal"
    )

    # the model of record loads through MLflow and predicts raw test.csv rows as they are
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(root / "Trainer/model"))
    predictions = model.predict(test)
    assert (predictions == submission["Survived"].to_numpy()).all()
    assert model.metadata.signature is not None
    assert (root / "Trainer/model/input_example.json").exists()


def assert_few_tags_and_full_records(run) -> None:
    """A few tags to search on; per-task bookkeeping in the records, durations as metrics."""
    tags = run.data.tags
    tasks = ["Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction"]
    fingerprints = {f"luigiflow.task.{task}.fingerprint" for task in tasks}
    assert len(tags) <= 15, sorted(tags)
    assert set(tags) == fingerprints | {
        "mlflow.runName", "mlflow.note.content", "mlflow.user", "mlflow.source.name",
        "mlflow.source.git.commit", "luigiflow.git.dirty", "luigiflow.task",
        "luigiflow.validation", "luigiflow.registration",
    }  # fmt: skip
    records = task_records(run)
    assert {t: r["status"] for t, r in records.items()} == dict.fromkeys(tasks, "FINISHED")
    for task in tasks:
        assert records[task]["duration_s"] == pytest.approx(
            run.data.metrics[f"duration_s/{task}"], abs=0.01
        )


def assert_quiet_terminal(stdout: str, run_id: str) -> None:
    """Not a tty here: the run id, a line per task as it ends, then the summary."""
    lines = stdout.splitlines()
    assert len(lines) <= 15, stdout
    assert lines[0].startswith(f"Run {run_id} started")
    assert "Trainer        started" not in stdout, "-v shows when tasks start"
    assert re.search(r"Trainer\s+finished in [\d.]+s  no earlier run", stdout)
    assert "Run FINISHED" in stdout and f"/runs/{run_id}" in stdout
    assert "View run" not in stdout


def test_kaggle_files_run_unchanged(project):
    result = run_runner(project, "--set", f'PathConfig.input="{KAGGLE}"')
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    submission = pd.read_csv(artifacts(project, run) / "Prediction/submission.csv")
    assert len(submission) == 418
    assert (
        submission["PassengerId"].tolist()
        == pd.read_csv(KAGGLE / "test.csv")["PassengerId"].tolist()
    )


def test_config_errors_exit_2_and_create_no_run(project):
    result = run_runner(project, "--set", "Trainer.sead=3")
    assert result.returncode == 2
    assert "[Trainer] sead: unknown key" in result.stderr and "'seed'" in result.stderr
    assert runs(project) == []

    (project / "input/train.csv").write_text("PassengerId,Survived,Pclass\n1,0,3\n")
    result = run_runner(project)
    assert result.returncode == 2
    assert (
        "train.csv has no column 'Age'" in result.stderr
        and "[Dataset] numeric_columns" in result.stderr
    )
    assert runs(project) == []

    result = run_runner(project, "--workers", "0")
    assert result.returncode == 2 and runs(project) == []

    result = run_runner(project, "--from-run", "0" * 32)
    assert result.returncode == 2
    assert f"error: --from-run: no run {'0' * 32} in this store" in result.stderr

    # The default config (LUIGI_CONFIG_PATH of .env), broken: said by the runner, not by Luigi.
    config = project / "luigi.toml"
    config.write_text(config.read_text().replace("[Dataset]\n", "[Dataset\n"))
    result = run_runner(project)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"luigi\.toml:\d+:9: not valid TOML: Expected ']'", result.stderr)
    assert runs(project) == []


def test_input_files_that_are_not_what_they_seem_exit_2_before_any_run(project):
    inputs = project / "input"
    train, test = (inputs / "train.csv").read_text(), (inputs / "test.csv").read_text()
    (inputs / "train.csv").unlink()
    (inputs / "train.csv").symlink_to("/etc/passwd")
    result = run_runner(project, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "train.csv links to /etc/passwd, outside the input folder" in result.stderr
    assert "root:" not in result.stderr + result.stdout and "Traceback" not in result.stderr

    (inputs / "train.csv").unlink()
    lines = train.splitlines()
    (inputs / "train.csv").write_text("\n".join([*lines[:3], lines[3] + ",extra", *lines[4:]]))
    result = run_runner(project)
    assert result.returncode == 2
    assert "train.csv line 4 has" in result.stderr and "where the header has" in result.stderr

    (inputs / "train.csv").write_text(train)
    first = test.splitlines()[1]
    (inputs / "test.csv").write_text(test + first + "\n")  # one id twice
    result = run_runner(project)
    assert result.returncode == 2
    assert "[Dataset] id_column:" in result.stderr and "an id must be unique" in result.stderr
    assert f"'{first.split(',')[0]}' (lines 2, {len(test.splitlines()) + 1})" in result.stderr

    header, *rows = test.splitlines()
    age = header.split(",").index("Age")
    broken = [r.split(",") for r in rows]
    broken[4][age] = "unknown"
    (inputs / "test.csv").write_text("\n".join([header, *(",".join(r) for r in broken)]) + "\n")
    result = run_runner(project)
    assert result.returncode == 2
    assert "test.csv column 'Age' is a column of numbers with text in it: 'unknown' (line 6)" in (
        result.stderr
    )
    assert runs(project) == []


def test_output_closed_early_ends_quietly_with_the_run_s_true_status(project):
    """`python src/runner.py | head -1`: the reader goes after the first line."""
    runner = start_runner(project)
    assert runner.stdout.readline().startswith("Run ")
    runner.stdout.close()
    stderr = runner.stderr.read()
    assert runner.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    [run] = runs(project)
    assert run.info.status == "FINISHED"
    assert (artifacts(project, run) / "Prediction" / "submission.csv").is_file()


def test_a_failing_task_fails_the_run_and_leaves_nothing_that_looks_complete(project):
    save = '        self.save("submission", table)'
    edit_task(
        project,
        "prediction",
        save,
        f'{save}\n        raise RuntimeError("boom after writing")',
        replace=True,
    )
    result = run_runner(project)
    assert result.returncode == 1
    assert "RuntimeError: boom after writing" in result.stderr
    [run] = runs(project)
    assert run.info.status == "FAILED"
    assert task_statuses(run)["Prediction"] == "FAILED"
    root = artifacts(project, run)
    assert "boom after writing" in (root / "errors/Prediction.txt").read_text()
    assert (root / "Prediction/submission.csv").exists() and not (
        root / "Prediction/_manifest.json"
    ).exists()
    assert re.search(r"Prediction\s+failed", result.stdout)

    # its partial output is refused as a reuse source
    result = run_runner(
        project, "--set", f'PathConfig.Prediction="runs:/{run.info.run_id}/Prediction"'
    )
    assert result.returncode == 2
    assert "Prediction FAILED in run" in result.stderr
    result = run_runner(project, "--set", f'PathConfig.Prediction="{root / "Prediction"}"')
    assert result.returncode == 2 and "is a run's artifact folder" in result.stderr
    copy = project / "elsewhere" / "Prediction"  # the same files outside the store
    shutil.copytree(root / "Prediction", copy)
    result = run_runner(project, "--set", f'PathConfig.Prediction="{copy}"')
    assert result.returncode == 2 and "holds no complete outputs" in result.stderr
    assert len(runs(project)) == 1


def test_reuse_from_an_earlier_run(project, first_run):
    [first] = runs(project)
    source = first.info.run_id
    result = run_runner(
        project,
        "--no-cache",
        "--set",
        f'PathConfig.Preprocessor="runs:/{source}/Preprocessor"',
        "--set",
        f'PathConfig.Trainer="runs:/{source}/Trainer"',
    )
    assert result.returncode == 0, result.stderr
    second = runs(project)[0]
    statuses = task_statuses(second)
    assert "Trainer" not in statuses and "Preprocessor" not in statuses
    assert statuses["Prediction"] == "FINISHED"
    assert reused_from(second)["Trainer"] == f"runs:/{source}/Trainer"
    assert re.search(rf"Trainer\s+reused\s+from runs:/{source}/Trainer", result.stdout)
    assert "Trainer        finished" not in result.stdout
    old = (artifacts(project, first) / "Prediction/submission.csv").read_bytes()
    new = (artifacts(project, second) / "Prediction/submission.csv").read_bytes()
    assert old == new
    assert not (artifacts(project, second) / "Trainer").exists()


def test_sigterm_mid_run_ends_killed_with_143(project):
    ui = "http://127.0.0.1:51577"  # the UI the user serves: the printed link opens it
    process, seen = start_stuck_in_trainer(project, LUIGIFLOW_UI_URL=ui)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    stdout = seen + stdout
    assert process.returncode == 143
    [run] = runs(project)
    assert run.info.status == "KILLED"
    assert task_statuses(run)["Trainer"] == "KILLED"
    assert not (artifacts(project, run) / "Trainer/_manifest.json").exists()
    assert "Run KILLED" in stdout
    assert re.search(r"Evaluator\s+not run\s+the run was interrupted", stdout), stdout
    assert "upstream task failed" not in stdout
    page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert f"  MLflow: {page}?workflowType=machine_learning" in stdout


def test_kill_9_leaves_a_run_the_next_runner_marks_killed(project):
    process, _ = start_stuck_in_trainer(project)
    process.kill()
    process.wait()
    assert runs(project)[0].info.status == "RUNNING"
    bad_config = run_runner(project, "--set", 'PathConfig.input="nowhere"')
    assert bad_config.returncode == 2 and runs(project)[0].info.status == "RUNNING", (
        "no run, no sweep"
    )
    edit_task(project, "trainer", "time.sleep(60)", "pass", replace=True)
    assert run_runner(project).returncode == 0
    old, new = runs(project)[1], runs(project)[0]
    assert (old.info.status, new.info.status) == ("KILLED", "FINISHED")


def test_two_workers_give_the_same_result(project, first_run):
    result = run_runner(project, "--workers", "2", "--no-cache")
    assert result.returncode == 0, result.stderr
    one, two = runs(project)[1], runs(project)[0]
    assert task_statuses(two)["Trainer"] == "FINISHED"
    assert (artifacts(project, one) / "Prediction/submission.csv").read_bytes() == (
        artifacts(project, two) / "Prediction/submission.csv"
    ).read_bytes()

    def scores(run) -> dict:  # what the model did, not how long the tasks took
        return {k: v for k, v in run.data.metrics.items() if not k.startswith("duration_s/")}

    assert scores(one) == scores(two)


def test_two_runners_at_once_on_the_embedded_store(project):
    first, second = start_runner(project), start_runner(project, "--set", "Trainer.seed=1")
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outputs
    assert "database is locked" not in "".join(o[1] for o in outputs)
    assert sorted(r.info.status for r in runs(project)) == ["FINISHED", "FINISHED"]


def test_reuse_after_the_project_folder_moved(project, first_run, tmp_path):
    [first] = runs(project)
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    reuse = ["--no-cache", "--set", f'PathConfig.Trainer="runs:/{first.info.run_id}/Trainer"']
    result = run_runner(moved, *reuse)
    assert result.returncode == 2
    assert (
        "no longer exists" in result.stderr
        and "python src/runner.py --repair-store" in result.stderr
    )
    assert len(runs(moved)) == 1, "no run is created in a store that points elsewhere"

    repaired = run_runner(moved, "--repair-store")
    assert repaired.returncode == 0 and "store repaired" in repaired.stdout
    result = run_runner(moved, *reuse)
    assert result.returncode == 0, result.stderr
    latest = runs(moved)[0]
    assert Path(latest.info.artifact_uri).is_relative_to(moved)
    assert (Path(latest.info.artifact_uri) / "Prediction/submission.csv").exists()


def test_help_lists_the_options(project):
    result = run_runner(project, "--help")
    assert result.returncode == 0
    for option in ("--config", "--task", "--set", "--workers", "--scheduler-url", "--verbose"):
        assert option in result.stdout


def test_ctrl_c_mid_run_ends_killed_with_130(project):
    """Even when started with SIGINT ignored (a script's background job, a CI step)."""
    process, _ = start_stuck_in_trainer(project, ignore_sigint=True, PYTHONFAULTHANDLER="1")
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # the fault handler prints every thread's stack
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"still running 60 s after Ctrl-C:\n{stdout}\n{stderr}") from None
    assert process.returncode == 130, stdout + stderr
    [run] = runs(project)
    assert run.info.status == "KILLED"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failed_upstream_task_is_named_and_its_downstream_not_run(project, workers):
    # More folds than rows of a class: known only once the Trainer reads its split.
    result = run_runner(project, "--set", "Trainer.cv_folds=5000", "--workers", workers)
    assert result.returncode == 1
    assert "too few for 5000-fold cross-validation" in result.stderr
    assert re.search(r"Trainer\s+failed", result.stdout)
    assert re.search(r"Prediction\s+not run\s+an upstream task failed", result.stdout)
    [run] = runs(project)
    assert run.info.status == "FAILED"
    assert "Prediction" not in task_statuses(run)


def test_secrets_never_reach_the_run(project):
    secret, token = "hunter2-secret-value", "tok-0123456789"
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "."], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
        cwd=project,
        check=True,
    )
    edit_task(
        project,
        "trainer",
        '        train = self.load("train")',
        "        import logging, os\n"
        '        password = os.environ["SERVICE_PASSWORD"]\n'
        '        logging.getLogger("tasks").warning("service password=%s", password)',
    )
    (project / ".env.local").write_text(f"SERVICE_PASSWORD={secret}\n")
    (project / "notes.txt").write_text(f"api_token = {token}\n")
    result = run_runner(
        project, "--set", f'RunConfig.tags={{ api_token = "{token}", owner = "me" }}'
    )
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    root = artifacts(project, run)
    recorded = [json.dumps(run.data.params), json.dumps(run.data.tags)]
    recorded += [
        p.read_text()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".toml", ".log", ".patch", ".txt")
    ]
    assert any("service password=***" in text for text in recorded), "the log line is there, masked"
    assert run.data.tags["api_token"] == "***" and run.data.tags["owner"] == "me"
    assert (root / "git/diff.patch").exists()
    for text in recorded:
        assert secret not in text and token not in text
    assert secret not in result.stdout + result.stderr


def test_autolog_switch_logs_through_the_same_run(project):
    result = run_runner(project, "--set", "Trainer.autolog=true")
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    assert run.info.status == "FINISHED"
    assert "training_accuracy_score" in run.data.metrics, "autolog wrote into this run"
    assert "cv_accuracy" in run.data.metrics


def test_verbose_shows_library_logs(project):
    result = run_runner(project, "-v")
    assert result.returncode == 0
    assert "luigi" in result.stderr and "INFO" in result.stderr


def test_crlf_line_endings_and_extra_columns_are_tolerated(project):
    for name in ("train.csv", "test.csv"):
        path = project / "input" / name
        table = pd.read_csv(path)
        table.insert(2, "Notes", "extra, unused")
        path.write_bytes(table.to_csv(index=False, lineterminator="\r\n").encode())
    assert b"\r\n" in (project / "input/train.csv").read_bytes()
    result = run_runner(project)
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    train = pd.read_parquet(artifacts(project, run) / "Preprocessor/train.parquet")
    assert "Notes" not in train.columns
    assert set(train["Sex"]) == {"male", "female"}
    assert train["Parch"].dtype == "int64" and train["Age"].dtype == "float64"


def test_a_missing_input_file_is_a_config_error(project):
    (project / "input/test.csv").unlink()
    result = run_runner(project)
    assert result.returncode == 2
    assert "[PathConfig] input: test.csv not found" in result.stderr
    assert runs(project) == []


def test_mlflow_run_is_adopted_not_doubled(project, first_run):
    """`mlflow run .` starts a run and passes MLFLOW_RUN_ID: the runner logs into that one."""
    env = runner_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [str(BIN / "mlflow"), "run", ".", "--env-manager", "local", "--experiment-name", "titanic"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    adopted, first = runs(project)
    assert len(runs(project)) == 2, "one run per invocation, even under mlflow run"
    assert adopted.data.tags["mlflow.project.entryPoint"] == "main"
    assert adopted.info.status == "FINISHED"
    assert reused_from(adopted)["Prediction"].startswith(f"runs:/{first.info.run_id}")
    assert adopted.data.params["RunConfig.task"] == "Prediction"
    assert (artifacts(project, adopted) / "logs/runner.log").exists()
