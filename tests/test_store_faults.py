"""End to end: a tracking server that dies or freezes mid-run, and many runners at once."""

from __future__ import annotations

import signal
import time

import pytest
from conftest import (
    TRAINER_TOP,
    edit_task,
    runner_env,
    runs,
    signal_server,
    start_runner,
    start_server,
    wait_for_line,
)
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_server_that_fails_mid_run_ends_the_run_within_the_deadline(project, tmp_path, fault):
    gate = project / "go"
    # The Trainer waits for the gate, so the server fails while it runs.
    edit_task(
        project,
        "trainer",
        TRAINER_TOP,
        "        import pathlib, time\n"
        f"        while not pathlib.Path({str(gate)!r}).exists():\n"
        "            time.sleep(0.05)",
    )
    server, url = start_server(tmp_path)
    env = runner_env(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_HTTP_REQUEST_TIMEOUT="3",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        LUIGIFLOW_ENDING_TIMEOUT_S="15",
    )
    try:
        runner = start_runner(project, env=env)
        wait_for_line(runner, "Trainer        started")
        signal_server(server, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        began = time.monotonic()
        gate.touch()
        stdout, stderr = runner.communicate(timeout=300)
        seconds = time.monotonic() - began
    finally:
        signal_server(server, signal.SIGCONT)
        signal_server(server, signal.SIGKILL)
        server.wait()
    assert runner.returncode == 1, stdout + stderr
    assert seconds < 120, f"the run took {seconds:.0f} s to end"
    assert "Run FAILED" in stdout and "Trainer" in stdout
    assert "The tracking store failed while the run was ending" in stderr
    assert "may be left RUNNING (the next runner marks it KILLED)" in stderr
    assert not list((project / ".luigiflow" / "staging").glob("*/Trainer")), "staging is cleaned"


def test_eight_runners_at_once_on_a_fresh_store_all_finish_with_one_version(project):
    runners = [start_runner(project) for _ in range(8)]
    outputs = [runner.communicate(timeout=600) for runner in runners]
    codes = [runner.returncode for runner in runners]
    assert codes == [0] * 8, outputs
    assert sorted(run.info.status for run in runs(project)) == ["FINISHED"] * 8
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'titanic'")
    fingerprints = [v.tags["luigiflow.fingerprint"] for v in versions]
    assert len(fingerprints) == len(set(fingerprints)) == 1, fingerprints
