"""Work on a run that exists, knowing only its id: a process is let onto a run only with the
run's tasks, its secrets' variables, its code and its input files, and then builds it. Real
runs in a throwaway embedded store, with tasks of this module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import luigi
import luigi.configuration
import pytest

from luigiflow import caching, runstate, store, worker
from luigiflow.config import ConfigError
from luigiflow.inputs import InputFile
from luigiflow.runstate import RUN, RunContext, TaskPlan
from luigiflow.task import PipelineTask


class WorkerRows(PipelineTask):
    """Reads one input file and writes how many lines it has."""

    outputs = {"count": "count.json"}

    def input_files(self) -> dict[str, InputFile]:
        return {"rows": InputFile("rows.csv")}

    def run(self) -> None:
        lines = self.input_path("rows").read_text().splitlines()
        self.save("count", {"lines": len(lines)})


TASKS = {"WorkerRows": WorkerRows}


@pytest.fixture
def planned(client, settings, tmp_path) -> tuple[str, Path]:
    """A RUNNING run that planned WorkerRows with this code and this `input/rows.csv`, whose
    config asks Luigi for a worker option and reads a secret from the environment."""
    rows = tmp_path / "input" / "rows.csv"
    rows.parent.mkdir()
    rows.write_text("a\n1\n2\n")
    entry = TaskPlan(
        "WorkerRows",
        [],
        RUN,
        fingerprint=caching.Fingerprint(
            "WorkerRows", {}, {"rows.csv": caching.file_digest(rows)}, {}, "code"
        ).as_dict(),
        modules=caching.modules_of(WorkerRows),
    )
    config = {"worker": {"max_reschedules": 7}, "Db": {"password": "${WORKER_DB_PASSWORD}"}}
    experiment = store.experiment(client, "worker", settings)
    run_id = client.create_run(experiment.experiment_id).info.run_id
    RunContext("WorkerRows", "input", config, {"WorkerRows": entry}).save(run_id)
    runstate._known.pop(run_id)  # as a process that never saw it: read from the store
    return run_id, rows


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("WORKER_DB_PASSWORD", "s3cret-pw")


def test_a_fit_process_gets_the_run_s_context_and_luigi_its_own_sections(planned):
    run_id, _ = planned
    context = worker.attach(run_id, TASKS)
    assert context.root == "WorkerRows" and list(context.tasks) == ["WorkerRows"]
    assert luigi.configuration.get_config("toml").get("worker", "max_reschedules") == "7"


def test_a_process_without_one_of_the_run_s_tasks_is_refused(planned):
    run_id, _ = planned
    with pytest.raises(ConfigError, match="this checkout has no task WorkerRows"):
        worker.attach(run_id, {})


def test_a_process_without_a_secret_s_variable_is_refused_naming_it(planned, monkeypatch):
    run_id, _ = planned
    monkeypatch.delenv("WORKER_DB_PASSWORD")
    with pytest.raises(ConfigError, match="WORKER_DB_PASSWORD") as refused:
        worker.attach(run_id, TASKS)
    assert "s3cret-pw" not in str(refused.value)


def test_a_process_with_other_code_is_refused_naming_the_task_and_module(planned, client):
    run_id, _ = planned
    context = runstate.load(run_id)
    [module] = context.tasks["WorkerRows"].modules
    context.tasks["WorkerRows"].modules = {module: "0" * 64}
    with pytest.raises(ConfigError, match=rf"code differs from the run's: WorkerRows \({module}\)"):
        worker.attach(run_id, TASKS)


def test_a_process_with_other_or_missing_input_files_is_refused(planned):
    run_id, rows = planned
    rows.write_text("a\n1\n2\n3\n")
    with pytest.raises(ConfigError, match=r"rows\.csv differs from the file the run was planned"):
        worker.attach(run_id, TASKS)
    rows.unlink()
    with pytest.raises(ConfigError, match=r"rows\.csv is missing here; the run reads it"):
        worker.attach(run_id, TASKS)


def test_an_attached_process_builds_the_run_s_pending_task(planned, client):
    run_id, _ = planned
    context = worker.attach(run_id, TASKS)
    assert worker.build(run_id, context, TASKS)
    count = Path(client.get_run(run_id).info.artifact_uri) / "WorkerRows/count.json"
    assert json.loads(count.read_text()) == {"lines": 3}
    assert runstate.read_record(run_id, "WorkerRows").status == runstate.FINISHED


def test_a_run_without_a_context_is_no_run_to_work_on(client, settings):
    experiment = store.experiment(client, "worker", settings)
    run_id = client.create_run(experiment.experiment_id).info.run_id
    with pytest.raises(runstate.NoContext):
        worker.attach(run_id, TASKS)


def test_the_task_classes_are_every_pipeline_task_of_the_modules():
    found = worker.load_task_classes(["tasks.trainer", "tasks.prediction"])
    assert {"Preprocessor", "Trainer", "Prediction", "WorkerRows"} <= set(found)
    assert all(issubclass(cls, PipelineTask) for cls in found.values())
    assert found["Trainer"].__module__ == "tasks.trainer"


def test_each_of_several_workers_gets_its_share_of_the_cores():
    from threadpoolctl import threadpool_info

    numpy = __import__("numpy")
    assert numpy is not None
    with worker._threads_per_task(2):
        shares = {pool["num_threads"] for pool in threadpool_info()}
    assert shares == {max(1, (os.cpu_count() or 1) // 2)}
    with worker._threads_per_task(1):
        assert threadpool_info(), "one worker keeps the libraries' own defaults"
