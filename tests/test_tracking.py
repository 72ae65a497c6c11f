"""The run's life: what is recorded at the start, and runs left RUNNING by a killed runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from luigiflow import tracking
from luigiflow.redact import MASK, Redactor
from luigiflow.settings import Settings


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return Settings(tmp_path, tmp_path / "luigi.toml", uri, tmp_path / "mlartifacts")


@pytest.fixture
def client(settings) -> MlflowClient:
    return MlflowClient(settings.tracking_uri)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_experiment_artifacts_live_under_the_project(client, settings):
    experiment = tracking.experiment(client, "my exp", settings)
    assert experiment.artifact_location == str(settings.artifact_root / "my-exp")
    assert tracking.experiment(client, "my exp", settings).experiment_id == experiment.experiment_id


def test_start_run_records_config_git_and_command_without_secrets(client, settings, tmp_path):
    git(tmp_path, "init", "-q")
    git(
        tmp_path,
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
    (tmp_path / "notes.txt").write_text("db_password = 'hunter22'\n")
    experiment = tracking.experiment(client, "e", settings)
    run_config = {
        "task": "Trainer",
        "description": "why",
        "run_name": "first",
        "tags": {"team": "a"},
    }
    resolved = {
        "RunConfig": run_config,
        "Db": {"uri": "postgresql://u:pw-secret@h/db", "password": "p4ss"},
    }
    argv = ["src/runner.py", "--set", "Db.password=p4ss"]
    run_id = tracking.start_run(
        client,
        experiment.experiment_id,
        run_config,
        resolved,
        Redactor(["pw-secret", "hunter22"]),
        tmp_path,
        argv,
    )
    run = client.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.run_name == "first" and tags["team"] == "a"
    assert tags["mlflow.note.content"] == "why"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["luigiflow.git.dirty"] == "true"
    assert tags["luigiflow.command"].endswith(f"Db.password={MASK}")
    assert params["Db.password"] == MASK and params["Db.uri"] == f"postgresql://u:{MASK}@h/db"
    assert params["RunConfig.tags"] == '{"team": "a"}'
    artifacts = Path(run.info.artifact_uri)
    config_text = (artifacts / "config/luigi.toml").read_text()
    assert (
        "p4ss" not in config_text
        and "pw-secret" not in config_text
        and 'task = "Trainer"' in config_text
    )
    diff = (artifacts / "git/diff.patch").read_text()
    assert "notes.txt" in diff and "hunter22" not in diff


def test_a_clean_tree_logs_no_diff(client, settings, tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n")
    git(tmp_path, "add", ".gitignore")
    git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "x")
    experiment = tracking.experiment(client, "e", settings)
    run_id = tracking.start_run(
        client, experiment.experiment_id, {"task": "T"}, {}, Redactor(), tmp_path, []
    )
    run = client.get_run(run_id)
    assert run.data.tags["luigiflow.git.dirty"] == "false"
    assert not (Path(run.info.artifact_uri) / "git").exists()


def test_abandoned_runs_are_marked_killed_live_ones_are_not(client, settings, tmp_path):
    experiment = tracking.experiment(client, "e", settings)
    exp_id = experiment.experiment_id
    live = tracking.start_run(client, exp_id, {"task": "T"}, {}, Redactor(), tmp_path, [])
    dead_process = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_process.wait()
    dead = client.create_run(
        exp_id,
        tags={
            tracking.HOST_TAG: __import__("socket").gethostname(),
            tracking.PID_TAG: str(dead_process.pid),
            tracking.PROCESS_START_TAG: "12345",
        },
    ).info.run_id
    assert tracking.mark_abandoned_runs(client, exp_id) == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(live).info.status == "RUNNING"


def test_run_url():
    page = tracking.run_url("sqlite:////x/mlflow.db", "1", "abc", "http://127.0.0.1:5000")
    assert page == "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
    remote = tracking.run_url("https://u:pw@mlflow.example/", "2", "r", "x", "/artifacts/T/a.csv")
    assert remote == (
        f"https://u:{MASK}@mlflow.example/#/experiments/2/runs/r/artifacts/T/a.csv"
        "?workflowType=machine_learning"
    )


def test_store_moved_is_detected_and_repaired(client, settings, tmp_path):
    old_root = tmp_path / "old-place" / "mlartifacts"
    old_settings = Settings(tmp_path, tmp_path / "luigi.toml", settings.tracking_uri, old_root)
    experiment = tracking.experiment(client, "e", old_settings)
    run = client.create_run(experiment.experiment_id)
    client.log_text(run.info.run_id, "x", "a.txt")
    settings.artifact_root.mkdir()
    (old_root / "e").rename(settings.artifact_root / "e")
    with pytest.raises(tracking.StoreMoved, match="--repair-store"):
        tracking.experiment(client, "e", settings)
    assert tracking.repair_store(settings) == [
        (str(old_root / "e"), str(settings.artifact_root / "e"))
    ]
    assert tracking.experiment(client, "e", settings).artifact_location == str(
        settings.artifact_root / "e"
    )
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(
        str(settings.artifact_root / "e")
    )
