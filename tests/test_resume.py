"""End to end: finishing a failed or killed run in place, retries and timeouts per task, and
what a run refuses to be pointed at."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import (
    TRAINER_TOP,
    artifacts,
    edit_task,
    gate_trainer,
    run_file,
    run_runner,
    runner_env,
    runs,
    stall_trainer_when_asked,
    start_runner,
    task_statuses,
    wait_until_asleep,
)

pytestmark = pytest.mark.slow


def start_stalled(project):
    runner = start_runner(project, env=runner_env(STALL_TRAINER="1"))
    wait_until_asleep(project, runner)
    return runner


def record(project, run, family: str) -> dict:
    return json.loads((artifacts(project, run) / f"luigiflow/tasks/{family}.json").read_text())


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_resume_finishes_a_killed_run_in_place(project, how):
    stall_trainer_when_asked(project)
    runner = start_stalled(project)
    if how == "SIGTERM":
        runner.send_signal(signal.SIGTERM)
    else:
        runner.kill()
    runner.communicate(timeout=60)
    [killed] = runs(project)
    run_id = killed.info.run_id
    assert killed.info.status == ("KILLED" if how == "SIGTERM" else "RUNNING")
    params = killed.data.params

    result = run_runner(project, "--resume", run_id)
    assert result.returncode == 0, result.stdout + result.stderr
    [done] = runs(project)
    assert done.info.run_id == run_id and done.info.status == "FINISHED"
    assert done.data.params == params, "params are not logged again"
    kept = r"Preprocessor\s+kept\s+[\d.]+s\s+finished in an earlier attempt"
    assert re.search(kept, result.stdout)
    assert re.search(r"Trainer\s+finished in", result.stdout)
    assert "Preprocessor   finished" not in result.stdout
    assert (artifacts(project, done) / "Prediction/submission.csv").exists()
    [resumed] = run_file(done, "luigiflow/runner.json")["resumes"]
    assert resumed["previous_status"] == killed.info.status or (
        how == "kill -9" and resumed["previous_status"] == "KILLED"  # marked by this runner
    )
    assert f"--resume {run_id}" in resumed["command"]
    assert record(project, done, "Trainer")["status"] == "FINISHED"


def test_resume_after_a_failure_and_what_it_refuses(project):
    bad = "Trainer.cv_folds=5000"  # too many folds: the Trainer fails as it runs
    assert run_runner(project, "--set", bad).returncode == 1
    [failed] = runs(project)
    run_id = failed.info.run_id

    refused = (
        ["--set", "Trainer.seed=1"],
        ["--task", "Trainer"],
        ["--config", "luigi.toml"],
        ["--dry-run"],
        ["--force", "Trainer"],
        ["--no-cache"],
    )
    for extra in refused:
        refused = run_runner(project, "--resume", run_id, *extra)
        assert refused.returncode == 2, extra
    # The run's own config is kept: the bad value fails again, in the same run.
    again = run_runner(project, "--resume", run_id)
    assert again.returncode == 1 and "5000-fold" in again.stderr
    assert runs(project)[0].info.status == "FAILED" and len(runs(project)) == 1

    edit_task(project, "trainer", TRAINER_TOP, "        changed = True")
    different = run_runner(project, "--resume", run_id)
    assert different.returncode == 2
    assert "code differs from the run's: Trainer (tasks.trainer)" in different.stderr

    assert run_runner(project).returncode == 0
    finished = runs(project)[0].info.run_id
    refused = run_runner(project, "--resume", finished)
    assert refused.returncode == 2 and "FINISHED: nothing to resume" in refused.stderr


def test_a_flaky_task_succeeds_on_its_second_attempt(project):
    edit_task(
        project,
        "splitter",
        '        table = self.load("train")',
        f"        import pathlib\n"
        f"        marker = pathlib.Path({str(project / 'failed-once')!r})\n"
        "        if not marker.exists():\n"
        "            marker.touch()\n"
        "            raise RuntimeError('flaky')",
    )
    result = run_runner(project, "--set", "Splitter.retries=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Splitter\s+ran\s+[\d.]+s\s+.*\(attempt 2\)", result.stdout)
    [run] = runs(project)
    attempts = record(project, run, "Splitter")["attempts"]
    assert [a["status"] for a in attempts] == ["FAILED", "FINISHED"]
    assert attempts[0]["error"] == "RuntimeError: flaky"


def test_a_task_over_its_timeout_fails_the_run_and_says_so(project):
    stall_trainer_when_asked(project)
    result = run_runner(project, "--set", "Trainer.timeout_s=2", env=runner_env(STALL_TRAINER="1"))
    assert result.returncode == 1
    assert "Trainer timed out after 2 s" in result.stdout + result.stderr
    [run] = runs(project)
    assert run.info.status == "FAILED"
    assert record(project, run, "Trainer")["error"].startswith("luigiflow.attempt.TaskTimeout")


def test_a_path_with_dotdot_is_refused_before_anything(project):
    bad = f'PathConfig.Trainer="runs:/{"a" * 32}/../../b/artifacts/Trainer"'
    result = run_runner(project, "--set", bad)
    assert result.returncode == 2 and "'..' is not allowed" in result.stderr
    assert run_runner(project, "--set", 'PathConfig.Trainer="input/../input"').returncode == 2


def test_an_ended_run_is_not_adopted(project, first_run):
    [finished] = runs(project)
    result = run_runner(project, env=runner_env(MLFLOW_RUN_ID=finished.info.run_id))
    assert result.returncode == 2 and "only a RUNNING run is adopted" in result.stderr
    assert runs(project)[0].info.status == "FINISHED" and len(runs(project)) == 1


def test_ctrl_c_with_two_workers_ends_quietly_and_task_statuses_agree(project):
    """Ctrl-C in a terminal reaches the whole process group: the runner and its workers."""
    stall_trainer_when_asked(project)
    runner = subprocess.Popen(
        [sys.executable, "src/runner.py", "--workers", "2"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=runner_env(STALL_TRAINER="1"),
        start_new_session=True,
    )
    wait_until_asleep(project, runner)
    os.killpg(runner.pid, signal.SIGINT)
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 130
    assert "Traceback" not in stderr, stderr
    [run] = runs(project)
    assert run.info.status == "KILLED"
    assert record(project, run, "Trainer")["status"] == "KILLED"


def test_kill_9_of_the_runner_stops_its_workers_and_resume_succeeds_at_once(project):
    """The Trainer waits at a gate in a forked Luigi worker; the runner is killed outright.
    Its worker must not outlive it (nor commit once the gate opens), and a --resume started
    right away finishes the run with records that agree with its status."""
    import psutil

    gate = project / "go"
    gate_trainer(project, gate)
    runner = start_runner(project, "--workers", "2")
    wait_until_asleep(project, runner)
    workers = psutil.Process(runner.pid).children(recursive=True)
    assert workers, "the Trainer runs in a worker process"
    runner.kill()
    runner.wait(timeout=60)  # not communicate(): an orphaned worker would hold its pipes
    gate.touch()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for orphan in alive:  # the test's own processes: none are left behind, pass or fail
        orphan.kill()
    assert not alive, f"workers outlived their runner: {[p.pid for p in alive]}"
    [killed] = runs(project)
    assert not (artifacts(project, killed) / "Trainer/_manifest.json").exists()
    assert task_statuses(killed).get("Trainer") != "FINISHED"

    result = run_runner(project, "--resume", killed.info.run_id)
    assert result.returncode == 0, result.stdout + result.stderr
    [done] = runs(project)
    assert done.info.status == "FINISHED"
    assert set(task_statuses(done).values()) == {"FINISHED"}, task_statuses(done)
