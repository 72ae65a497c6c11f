"""The tracking store: experiments under the project, abandoned runs, a moved project."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from luigiflow import runstate, store, tracking
from luigiflow.runstate import RunnerRecord
from luigiflow.settings import Settings
from luigiflow.store import Ending


def test_experiment_artifacts_live_under_the_project(client, settings):
    experiment = store.experiment(client, "my exp", settings)
    assert experiment.artifact_location == str(settings.artifact_root / "my-exp")
    assert store.experiment(client, "my exp", settings).experiment_id == experiment.experiment_id


def owned_run(client, experiment_id: str, record: RunnerRecord) -> str:
    """A RUNNING run whose runner record is `record`, as a runner leaves it."""
    run_id = client.create_run(experiment_id).info.run_id
    runstate.write_runner_record(run_id, record)
    return run_id


def test_abandoned_runs_are_marked_killed_live_ones_are_not(client: MlflowClient, settings):
    exp_id = store.experiment(client, "e", settings).experiment_id
    live = owned_run(client, exp_id, RunnerRecord.of_this_process("python src/runner.py", {}))
    dead_process = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_process.wait()
    gone = RunnerRecord(socket.gethostname(), dead_process.pid, "12345", time.time(), 60)
    dead = owned_run(client, exp_id, gone)
    not_a_runners = client.create_run(exp_id).info.run_id  # no record: left alone
    running, finished = runstate.TaskRecord.begin("Trainer", ""), runstate.TaskRecord.begin("A", "")
    finished.status = runstate.FINISHED
    for record in (running, finished):
        runstate.write_record(dead, record)
    assert tracking.mark_abandoned_runs(client, [exp_id]) == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert runstate.read_record(dead, "Trainer").status == "KILLED", "records agree with the run"
    assert runstate.read_record(dead, "A").status == "FINISHED"
    assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(not_a_runners).info.status == "RUNNING"


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


def test_a_run_of_another_host_is_stale_after_three_missed_heartbeats(client, settings):
    exp_id = store.experiment(client, "e", settings).experiment_id
    now = time.time()

    def run_of_another_host(last_beat: float) -> str:
        return owned_run(client, exp_id, RunnerRecord("elsewhere", 1, "", last_beat, 10))

    silent, beating = run_of_another_host(now - 31), run_of_another_host(now - 5)
    assert tracking.mark_abandoned_runs(client) == [silent], "every experiment is searched"
    assert client.get_run(silent).info.status == "KILLED"
    assert client.get_run(beating).info.status == "RUNNING"


def test_the_heartbeat_refreshes_the_runner_record(client, settings, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_HEARTBEAT_S", "0.05")
    exp_id = store.experiment(client, "e", settings).experiment_id
    mine = RunnerRecord.of_this_process("python src/runner.py", {})
    mine.heartbeat -= 600
    run_id = owned_run(client, exp_id, mine)
    taken = owned_run(client, exp_id, RunnerRecord("elsewhere", 1, "", time.time() - 600, 60))
    beat = tracking.Heartbeat(run_id, taken)
    beat.start()
    time.sleep(0.5)
    beat.stop()
    beat.join(timeout=5)
    assert abs(runstate.read_runner_record(run_id).heartbeat - time.time()) < 5
    assert time.time() - runstate.read_runner_record(taken).heartbeat > 500, (
        "another runner's record is left"
    )
    assert client.get_run(run_id).data.tags.keys() <= {"mlflow.runName", "mlflow.user"}


def test_a_run_without_runner_record_is_gone_only_after_three_silent_intervals():
    now = time.time()
    assert not runstate.runner_gone(None, started=now - 100, now=now), "60 s interval: 180 s"
    assert runstate.runner_gone(None, started=now - 200, now=now)


def test_the_manifest_digest_is_read_from_the_fingerprint_tag_or_an_older_run_s_own_tag():
    from luigiflow.names import recorded_manifest_digest

    assert recorded_manifest_digest({"luigiflow.task.T.fingerprint": "fp:md"}, "T") == "md"
    older = {"luigiflow.task.T.fingerprint": "fp", "luigiflow.task.T.manifest_sha256": "md"}
    assert recorded_manifest_digest(older, "T") == "md"
    assert recorded_manifest_digest({}, "T") is None


def test_the_ending_is_bounded_and_goes_on_after_a_failure():
    ending = Ending(seconds=0.5)
    began = time.monotonic()
    assert ending.step("read the records", lambda: {"a": 1}) == {"a": 1}
    assert ending.step("write the report", lambda: 1 / 0) is None
    assert ending.step("upload the log", lambda: time.sleep(30)) is None
    assert ending.step("settle tasks", lambda: "skipped after a timeout") is None
    assert ending.step("end the run", lambda: "ended", always=True) == "ended"
    assert time.monotonic() - began < 10
    assert ending.problems == [
        "could not write the report (ZeroDivisionError: division by zero)",
        "could not upload the log within the deadline",
    ]
