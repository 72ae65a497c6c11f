"""End to end: a run rebuilt from its id alone, reproduced from what it logged, and fingerprints
that follow the code a task really runs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys

import pytest
import toml
from conftest import (
    TRAINER_TOP,
    add_secret_parameter,
    artifacts,
    edit_task,
    run_file,
    run_runner,
    runner_env,
    runs,
    stall_trainer_when_asked,
    start_runner,
    wait_until_asleep,
)

pytestmark = pytest.mark.slow

# The entry a worker that knows only the run id takes (the tracking URI is in its environment).
WORK = (
    "import sys; from pathlib import Path; sys.path.insert(0, 'src'); "
    "from luigiflow.cli import exit_now; from luigiflow.worker import main; "
    "exit_now(main(Path.cwd(), ['tasks'], sys.argv[1]))"
)


def fingerprints(run) -> dict[str, str]:
    """Each finished task's fingerprint (its tag also holds the manifest's digest)."""
    return {
        key.split(".")[2]: value.partition(":")[0]
        for key, value in run.data.tags.items()
        if key.startswith("luigiflow.task.") and key.endswith(".fingerprint")
    }


def test_a_separate_process_given_only_the_run_id_finishes_the_run_like_the_runner(project):
    stall_trainer_when_asked(project)
    reference = run_runner(project, "--no-cache")
    assert reference.returncode == 0, reference.stderr

    runner = start_runner(project, "--no-cache", env=runner_env(STALL_TRAINER="1"))
    wait_until_asleep(project, runner)
    runner.send_signal(signal.SIGTERM)
    runner.communicate(timeout=60)
    stalled = runs(project)[0]
    assert stalled.info.status == "KILLED"
    run_id = stalled.info.run_id

    env = runner_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    worker = subprocess.run(
        [sys.executable, "-c", WORK, run_id],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "Trainer        finished in" in worker.stdout
    assert "Preprocessor   finished" not in worker.stdout, "finished tasks are not run again"

    done, first = runs(project)[0], runs(project)[1]
    assert done.info.run_id == run_id
    assert fingerprints(done) == fingerprints(first) and len(fingerprints(done)) == 6
    folder, reference_folder = artifacts(project, done), artifacts(project, first)
    assert (folder / "Prediction/submission.csv").read_bytes() == (
        reference_folder / "Prediction/submission.csv"
    ).read_bytes()
    trainer = json.loads((folder / "luigiflow/tasks/Trainer.json").read_text())
    splitter = json.loads((folder / "luigiflow/tasks/Splitter.json").read_text())
    assert trainer["status"] == splitter["status"] == "FINISHED"
    assert trainer["pid"] != splitter["pid"], "the Trainer ran in the separate process"
    runner = run_file(done, "luigiflow/runner.json")
    assert runner["pid"] == splitter["pid"], "the runner record names the runner"


def test_from_run_reuses_everything_and_its_logged_config_loads_with_config(project, first_run):
    [first] = runs(project)
    run_id = first.info.run_id

    dry = run_runner(project, "--from-run", run_id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would run" not in dry.stdout
    assert re.search(rf"Prediction\s+would reuse from run {run_id}", dry.stdout)

    again = run_runner(project, "--from-run", run_id, "--set", 'RunConfig.description="again"')
    assert again.returncode == 0, again.stderr
    new = runs(project)[0]
    assert new.info.run_id != run_id and new.data.tags["luigiflow.from_run"] == run_id
    assert new.data.tags["mlflow.note.content"] == "again"
    assert re.search(r"Prediction\s+reused", again.stdout)

    logged = artifacts(project, first) / "config/luigi.toml"
    values = toml.loads(logged.read_text())
    assert values["Splitter"]["validation_fraction"] == 0.2 and values["Trainer"]["seed"] == 0
    assert values["Trainer"]["autolog"] is False
    assert values["Trainer"]["estimator_params"] == {"max_iter": 1000}
    shutil.copy(logged, project / "logged.toml")
    via_config = run_runner(project, "--config", "logged.toml", "--dry-run")
    assert via_config.returncode == 0, via_config.stderr
    assert "would run" not in via_config.stdout


def test_from_run_says_what_changed_since(project):
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n.luigiflow/\n__pycache__/\n")
    subprocess.run(["git", "add", "."], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=project, check=True)
    assert run_runner(project).returncode == 0
    run_id = runs(project)[0].info.run_id

    edit_task(project, "trainer", TRAINER_TOP, "        features_seen = 0")
    subprocess.run([*git, "commit", "-qam", "two"], cwd=project, check=True)
    result = run_runner(project, "--from-run", run_id, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"note: run {run_id} was made at commit" in result.stdout
    assert "note: code differs from run" in result.stdout
    assert "Trainer (tasks.trainer)" in result.stdout
    assert re.search(r"Trainer\s+would run: code of Trainer changed", result.stdout)
    assert re.search(r"Splitter\s+would reuse", result.stdout)


def test_a_helper_imported_inside_run_is_part_of_the_fingerprint(project):
    helpers = project / "src" / "tasks" / "helpers.py"
    helpers.write_text("def shuffled(table):\n    return table\n")
    edit_task(
        project,
        "splitter",
        '        table = self.load("train")',
        "        from tasks.helpers import shuffled\n\n"
        '        table = shuffled(self.load("train"))',
        replace=True,
    )
    assert run_runner(project).returncode == 0
    helpers.write_text("def shuffled(table):\n    return table.sample(frac=1, random_state=1)\n")
    result = run_runner(project)
    assert result.returncode == 0, result.stderr
    assert re.search(r"Splitter\s+finished in [\d.]+s\s+code of Splitter changed", result.stdout)
    assert re.search(r"Preprocessor\s+(reused|skipped)", result.stdout)


def test_an_ambiguous_output_name_is_refused_before_the_run(project):
    edit_task(project, "trainer", "@requires(Splitter)", "@requires(Preprocessor, Splitter)", True)
    edit_task(
        project,
        "trainer",
        "from tasks.splitter import Splitter",
        "from tasks.preprocessor import Preprocessor\nfrom tasks.splitter import Splitter",
        replace=True,
    )
    result = run_runner(project)
    assert result.returncode == 2
    assert "Trainer reads 'train', which Preprocessor and Splitter both make" in result.stderr
    assert "of=Preprocessor" in result.stderr
    assert runs(project) == []

    edit_task(
        project,
        "trainer",
        'train = self.load("train")',
        'train = self.load("train", of=Splitter)',
        replace=True,
    )
    result = run_runner(project)
    assert result.returncode == 0, result.stderr


def test_a_secret_parameter_travels_as_a_reference_to_the_environment(project):
    value = "sekret-value-1234"
    add_secret_parameter(project, "TEST_API_TOKEN")
    edit_task(
        project,
        "preprocessor",
        '        self.save("train", self.typed(self.load("train.csv")))',
        f"        assert self.api_token == {value!r}, 'the secret reaches the task'",
    )
    missing = run_runner(project)
    assert missing.returncode == 2 and "TEST_API_TOKEN is not set" in missing.stderr
    assert runs(project) == []

    result = run_runner(project, "--workers", "2", env=runner_env(TEST_API_TOKEN=value))
    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    folder = artifacts(project, run)
    context = (folder / "luigiflow/context.json").read_text()
    assert "${TEST_API_TOKEN}" in context and value not in context
    assert 'api_token = "${TEST_API_TOKEN}"' in (folder / "config/luigi.toml").read_text()
    assert run.data.params["Preprocessor.api_token"] == "${TEST_API_TOKEN}"
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".toml", ".html", ".txt", ".log"):
            assert value not in path.read_text(errors="replace"), path


def test_another_task_than_the_default_builds_with_what_it_needs(project):
    result = run_runner(project, "--task", "Splitter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Splitter\s+finished in", result.stdout)
    assert "Trainer" not in result.stdout.split("Run FINISHED")[1]
