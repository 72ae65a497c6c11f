"""End to end: a tracking server that dies or freezes mid-run, and many runners at once."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time

import pytest
from conftest import (
    copy_project,
    gate_trainer,
    run_runner,
    runner_env,
    runs,
    signal_server,
    start_runner,
    start_server,
    wait_for_line,
    wait_until_asleep,
)
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_server_that_fails_mid_run_ends_the_run_within_the_deadline(project, tmp_path, fault):
    gate = project / "go"
    # The Trainer waits for the gate, so the server fails while it runs.
    gate_trainer(project, gate)
    server, url = start_server(tmp_path)
    env = runner_env(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_HTTP_REQUEST_TIMEOUT="3",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        LUIGIFLOW_ENDING_TIMEOUT_S="15",
    )
    try:
        runner = start_runner(project, env=env)
        wait_until_asleep(project, runner)
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
    assert "The store failed while the run was ending" in stderr
    assert "may be left RUNNING (the next runner marks it KILLED)" in stderr
    assert not list((project / ".luigiflow" / "staging").glob("*/Trainer")), "staging is cleaned"


def test_eight_runners_at_once_on_a_fresh_store_all_finish_with_one_version(tmp_path):
    project = copy_project(tmp_path / "project")
    runners = [start_runner(project) for _ in range(8)]
    outputs = [runner.communicate(timeout=600) for runner in runners]
    codes = [runner.returncode for runner in runners]
    assert codes == [0] * 8, outputs
    assert sorted(run.info.status for run in runs(project)) == ["FINISHED"] * 8
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'titanic'")
    fingerprints = [v.tags["luigiflow.fingerprint"] for v in versions]
    assert len(fingerprints) == len(set(fingerprints)) == 1, fingerprints


def test_a_full_disk_under_the_artifact_root_fails_the_run_with_the_summary(project):
    """The artifact root is a small file system of its own, filled while the Trainer runs."""
    gate, artifacts = project / "go", project / "mlartifacts"
    gate_trainer(project, gate)
    artifacts.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(artifacts)], check=True)
    try:
        runner = start_runner(project, env=runner_env(LUIGIFLOW_ENDING_TIMEOUT_S="15"))
        wait_until_asleep(project, runner)
        fill(artifacts / "filler")
        began = time.monotonic()
        gate.touch()
        stdout, stderr = runner.communicate(timeout=300)
        seconds = time.monotonic() - began
    finally:
        subprocess.run(["umount", "--lazy", str(artifacts)], check=False)
    assert runner.returncode == 1, stdout + stderr
    assert seconds < 60, f"the run took {seconds:.0f} s to end"
    assert "Run FAILED" in stdout and "Trainer" in stdout
    # The task's own error, then a paragraph on what the store could not do; none of the
    # bookkeeping's own tracebacks.
    assert "in save_model" in stderr and "No space left on device" in stderr
    assert "log_text" not in stderr and "log_artifact" not in stderr, stderr
    assert "The store failed while the run was ending" in stderr
    (run,) = runs(project)
    assert run.info.status == "FAILED"


def fill(path):
    """Write until the file system says it is full."""
    block = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(path, "wb") as handle:
        while True:
            handle.write(block)
            handle.flush()


def test_a_tracking_server_that_is_down_at_start_is_one_line_and_exit_2(project):
    began = time.monotonic()
    result = run_runner(project, env=runner_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9"))
    assert result.returncode == 2
    assert time.monotonic() - began < 30
    assert result.stderr.strip() == (
        "error: the tracking server at http://127.0.0.1:9 does not answer "
        "(is it running? is the URI right?)"
    ), result.stderr
    assert " started" not in result.stdout


def start_gated_on_a_server(project, tmp_path, **env):
    """A runner whose Trainer waits at a gate, on a tracking server of its own: the test
    fails the server while the Trainer runs, then opens the gate."""
    gate = project / "go"
    gate_trainer(project, gate)
    server, url = start_server(tmp_path)
    runner = start_runner(project, env=runner_env(MLFLOW_TRACKING_URI=url, **env))
    wait_until_asleep(project, runner)
    return server, runner, gate


def outcome_of(stdout: str, family: str) -> str:
    """A task's outcome in the summary (its row after "Run ..."): "ran", "not run", ..."""
    rows = stdout.split("\nRun ", 1)[-1].splitlines()
    row = next(line for line in rows if line.strip().startswith(family + " "))
    return re.split(r"\s{2,}", row.strip())[1]


def test_a_frozen_server_ends_the_run_within_its_deadline_with_unknown_tasks(project, tmp_path):
    """The ending's store calls share one deadline (LUIGIFLOW_ENDING_TIMEOUT_S), so requests
    that each wait their timeout cannot add up; what the runner cannot know is "unknown".
    The Trainer's failure is recorded within one request timeout too, after the request that
    failed it."""
    request_timeout, ending = 5, 20
    server, runner, gate = start_gated_on_a_server(
        project, tmp_path,
        MLFLOW_HTTP_REQUEST_TIMEOUT=str(request_timeout),
        LUIGIFLOW_ENDING_TIMEOUT_S=str(ending),
    )  # fmt: skip
    try:
        signal_server(server, signal.SIGSTOP)
        gate.touch()
        opened = time.monotonic()
        seen = wait_for_line(runner, "Trainer        FAILED", timeout=600)
        began = time.monotonic()
        stdout, stderr = runner.communicate(timeout=600)
        seconds, stdout = time.monotonic() - began, seen + stdout
        failing = began - opened
    finally:
        signal_server(server, signal.SIGCONT)
        signal_server(server, signal.SIGKILL)
        server.wait()
    assert runner.returncode == 1, stdout + stderr
    assert seconds < ending + request_timeout + 10, f"the ending took {seconds:.0f} s"
    # The commit's request, with its retries (.env: 2, backoff 1 s), then the failure's
    # bookkeeping within one request timeout in all.
    print(f"gate to Trainer FAILED: {failing:.1f} s; the ending: {seconds:.1f} s")
    assert failing < 3 * request_timeout + 3 + request_timeout + 15, f"{failing:.0f} s"
    assert "Run FAILED" in stdout
    assert outcome_of(stdout, "Evaluator") == "unknown", stdout
    assert "not run" not in stdout.split("\nRun ", 1)[-1], stdout


def test_a_killed_server_leaves_the_tasks_that_finished_before_it_finished(project, tmp_path):
    server, runner, gate = start_gated_on_a_server(
        project, tmp_path, MLFLOW_HTTP_REQUEST_TIMEOUT="5", LUIGIFLOW_ENDING_TIMEOUT_S="20"
    )
    try:
        signal_server(server, signal.SIGKILL)
        server.wait()
        gate.touch()
        stdout, stderr = runner.communicate(timeout=600)
    finally:
        signal_server(server, signal.SIGKILL)
    assert runner.returncode == 1, stdout + stderr
    for family in ("Preprocessor", "Splitter"):
        assert outcome_of(stdout, family) == "finished", stdout
