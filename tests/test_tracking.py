"""The run's life: what is recorded when it starts, and where its page is."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import toml
from mlflow import MlflowClient

from luigiflow import runstate, store, tracking
from luigiflow.config import Config
from luigiflow.redact import MASK, Redactor
from luigiflow.runstate import REUSED, RunContext, TaskPlan, load


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def commit_all(root: Path) -> None:
    git(
        root,
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )


def start(client, settings, tmp_path, run_config, resolved, redactor=None, argv=(), tasks=None):
    config = Config(tmp_path / "luigi.toml", {}, run_config, tmp_path)
    context = RunContext(run_config["task"], "input", resolved, tasks or {})
    experiment = store.experiment(client, "e", settings)
    return tracking.start_run(
        client,
        experiment.experiment_id,
        config,
        context,
        redactor or Redactor(),
        tmp_path,
        list(argv),
    )


def test_start_run_records_config_git_and_command_without_secrets(client, settings, tmp_path):
    git(tmp_path, "init", "-q")
    commit_all(tmp_path)
    (tmp_path / "notes.txt").write_text("db_password = 'hunter22'\n")
    run_config = {
        "task": "Trainer",
        "description": "why",
        "run_name": "first",
        "tags": {"team": "a"},
    }
    resolved = {
        "RunConfig": run_config,
        "Db": {"uri": "postgresql://u:pw-secret@h/db", "password": "p4ss", "token": "${TOKEN}"},
        "Trainer": {"seed": 3, "autolog": False, "grid": {"C": [0.1, 1.0]}},
    }
    argv = ["src/runner.py", "--set", "Db.password=p4ss"]
    redactor = Redactor(["pw-secret", "hunter22"])
    run_id = start(client, settings, tmp_path, run_config, resolved, redactor, argv)
    run = client.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.run_name == "first" and tags["team"] == "a"
    assert tags["mlflow.note.content"] == "why"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["luigiflow.git.dirty"] == "true"
    runner = runstate.read_runner_record(run_id)
    assert runner.command.endswith(f"Db.password={MASK}") and runner.pid == os.getpid()
    assert runner.versions["mlflow"] and not any(k.startswith("luigiflow.version") for k in tags)
    assert params["Db.password"] == MASK and params["Db.uri"] == f"postgresql://u:{MASK}@h/db"
    assert params["Db.token"] == "${TOKEN}", "a reference to a variable is not a secret"
    assert params["RunConfig.tags"] == '{"team": "a"}' and params["Trainer.seed"] == "3"
    artifacts = Path(run.info.artifact_uri)
    config_text = (artifacts / "config/luigi.toml").read_text()
    assert "p4ss" not in config_text and "pw-secret" not in config_text
    logged = toml.loads(config_text)
    assert logged["RunConfig"]["task"] == "Trainer"
    assert logged["Trainer"] == {"seed": 3, "autolog": False, "grid": {"C": [0.1, 1.0]}}, (
        "values keep their types"
    )
    diff = (artifacts / "git/diff.patch").read_text()
    assert "notes.txt" in diff and "hunter22" not in diff


def test_the_run_context_is_written_with_the_run_and_read_back_by_id(client, settings, tmp_path):
    source = f"runs:/{'a' * 32}/Trainer"
    tasks = {
        "Trainer": TaskPlan("Trainer", [], REUSED, source, cached=True),
        "Prediction": TaskPlan("Prediction", ["Trainer"], reason="no earlier run"),
    }
    run_id = start(client, settings, tmp_path, {"task": "Prediction"}, {}, tasks=tasks)
    saved = json.loads(
        (Path(client.get_run(run_id).info.artifact_uri) / "luigiflow/context.json").read_text()
    )
    assert [t["family"] for t in saved["tasks"]] == ["Trainer", "Prediction"]
    context = load(run_id)
    assert context.tasks["Trainer"].source == source and context.root == "Prediction"
    assert repr(context.folder("Trainer", run_id)) == source
    assert repr(context.folder("Prediction", run_id)) == f"runs:/{run_id}/Prediction"
    assert context.tasks["Prediction"].reason == "no earlier run"
    tags = client.get_run(run_id).data.tags
    assert not any(k.startswith("luigiflow.task.") for k in tags), "the plan is in the context"


def test_a_clean_tree_logs_no_diff(client: MlflowClient, settings, tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n")
    git(tmp_path, "add", ".gitignore")
    commit_all(tmp_path)
    run = client.get_run(start(client, settings, tmp_path, {"task": "T"}, {}))
    assert run.data.tags["luigiflow.git.dirty"] == "false"
    assert not (Path(run.info.artifact_uri) / "git").exists()


def test_run_url():
    page = tracking.run_url("sqlite:////x/mlflow.db", "1", "abc", "http://127.0.0.1:5000")
    assert page == "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
    remote = tracking.run_url("https://u:pw@mlflow.example/", "2", "r", "x", "/artifacts/T/a.csv")
    assert remote == (
        f"https://u:{MASK}@mlflow.example/#/experiments/2/runs/r/artifacts/T/a.csv"
        "?workflowType=machine_learning"
    )
