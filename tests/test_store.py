"""The tracking store: experiments under the project, abandoned runs, a moved project."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from luigiflow import store
from luigiflow.names import HOST_TAG, PID_TAG, PROCESS_START_TAG
from luigiflow.settings import Settings


def test_experiment_artifacts_live_under_the_project(client, settings):
    experiment = store.experiment(client, "my exp", settings)
    assert experiment.artifact_location == str(settings.artifact_root / "my-exp")
    assert store.experiment(client, "my exp", settings).experiment_id == experiment.experiment_id


def test_abandoned_runs_are_marked_killed_live_ones_are_not(client: MlflowClient, settings):
    exp_id = store.experiment(client, "e", settings).experiment_id
    host = socket.gethostname()
    live = client.create_run(
        exp_id,
        tags={
            HOST_TAG: host,
            PID_TAG: str(__import__("os").getpid()),
            PROCESS_START_TAG: store.process_start(__import__("os").getpid()),
        },
    ).info.run_id
    dead_process = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_process.wait()
    dead = client.create_run(
        exp_id,
        tags={HOST_TAG: host, PID_TAG: str(dead_process.pid), PROCESS_START_TAG: "12345"},
    ).info.run_id
    assert store.mark_abandoned_runs(client, exp_id) == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(live).info.status == "RUNNING"


def test_store_moved_is_detected_and_repaired(client, settings, tmp_path):
    old_root = tmp_path / "old-place" / "mlartifacts"
    old_settings = Settings(tmp_path, tmp_path / "luigi.toml", settings.tracking_uri, old_root)
    experiment = store.experiment(client, "e", old_settings)
    run = client.create_run(experiment.experiment_id)
    client.log_text(run.info.run_id, "x", "a.txt")
    settings.artifact_root.mkdir()
    (old_root / "e").rename(settings.artifact_root / "e")
    with pytest.raises(store.StoreMoved, match="--repair-store"):
        store.experiment(client, "e", settings)
    assert store.repair_store(settings) == [
        (str(old_root / "e"), str(settings.artifact_root / "e"))
    ]
    assert store.experiment(client, "e", settings).artifact_location == str(
        settings.artifact_root / "e"
    )
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(
        str(settings.artifact_root / "e")
    )
