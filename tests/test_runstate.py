"""The run context: one JSON value per run, written with it and read back by any process."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

import luigi

from luigiflow import runstate as run_context
from luigiflow.names import CONTEXT_ARTIFACT
from luigiflow.runstate import (
    COPIED,
    REUSED,
    RUN,
    SHARED,
    SKIPPED,
    NoContext,
    RunContext,
    TaskPlan,
)  # fmt: skip
from luigiflow.task import PipelineTask

SOURCE_RUN = "a" * 32


def sample() -> RunContext:
    """A context with every field set to something other than its default, and an order that
    is neither alphabetical nor the order of the decisions."""
    tasks = [
        TaskPlan(
            "Zeta",
            [],
            decision=SKIPPED,
            source=f"runs:/{SOURCE_RUN}/Zeta",
            fingerprint={"digest": "d-zeta", "params": {"n": "1"}},
        ),
        TaskPlan(
            "Alpha",
            ["Zeta"],
            decision=REUSED,
            source=f"runs:/{SOURCE_RUN}/Alpha",
            cached=True,
            fingerprint={"digest": "d-alpha", "upstream": {"Zeta": "d-zeta"}},
            modules={"tasks.alpha": "m-alpha"},
        ),
        TaskPlan(
            "Mid",
            ["Alpha"],
            decision=COPIED,
            source="/somewhere/Mid",
            mismatch="Mid.n 1 → 2",
        ),
        TaskPlan(
            "Shared",
            ["Alpha"],
            decision=SHARED,
            source=f"runs:/{SOURCE_RUN}/Shared",
            reason="made once for the sweep, by child 1",
        ),
        TaskPlan(
            "Beta",
            ["Alpha", "Mid"],
            decision=RUN,
            reason="Beta.seed 0 → 3",
            fingerprint={"digest": "d-beta", "code": "c"},
            modules={"tasks.beta": "m-beta", "tasks.util": "m-util"},
        ),
    ]
    return RunContext(
        root="Beta",
        input="data/in",
        config={
            "RunConfig": {"task": "Beta", "tags": {"owner": "me"}},
            "Beta": {"seed": 3, "rate": 0.5, "flag": True, "columns": ["a", "b"]},
            "Alpha": {"api_token": "${API_TOKEN}"},
        },
        tasks={t.family: t for t in tasks},
        scheduler="http://luigid:8082",
        promotion={"metric": "auc", "direction": "higher", "promote": "better"},
        label="Beta.seed=3",
    )


def test_json_round_trip_keeps_every_field_and_the_task_order():
    original = sample()
    text = original.to_json()
    back = RunContext.from_json(text)
    assert back == original
    assert list(back.tasks) == ["Zeta", "Alpha", "Mid", "Shared", "Beta"]
    assert back.tasks["Beta"].digest == "d-beta"
    assert back.tasks["Mid"].mismatch == "Mid.n 1 → 2"
    assert back.tasks["Alpha"].cached is True
    assert back.config["Beta"] == {"seed": 3, "rate": 0.5, "flag": True, "columns": ["a", "b"]}
    assert isinstance(back.config["Beta"]["seed"], int)
    data = json.loads(text)
    assert data["format"] == run_context.FORMAT
    assert [t["family"] for t in data["tasks"]] == ["Zeta", "Alpha", "Mid", "Shared", "Beta"]
    assert RunContext.from_json(back.to_json()) == original


def test_a_default_task_plan_round_trips_too():
    bare = RunContext("T", "input", {}, {"T": TaskPlan("T", [])})
    back = RunContext.from_json(bare.to_json())
    assert back == bare
    assert back.tasks["T"].decision == RUN and back.tasks["T"].source is None
    assert back.tasks["T"].digest == ""


@pytest.mark.parametrize("format_", [None, 0, 2, "1"])
def test_from_json_refuses_an_unknown_format(format_):
    data = json.loads(sample().to_json())
    if format_ is None:
        del data["format"]
    else:
        data["format"] = format_
    with pytest.raises(ValueError, match="run context format"):
        RunContext.from_json(json.dumps(data))


def test_decided_selects_by_decision():
    context = sample()
    assert list(context.decided(RUN)) == ["Beta"]
    assert list(context.decided(REUSED)) == ["Alpha"]
    assert list(context.decided(SKIPPED)) == ["Zeta"]
    assert list(context.decided(COPIED)) == ["Mid"]


def test_folder_of_a_reused_or_skipped_task_is_its_source():
    context = sample()
    own_run = "b" * 32
    reused = context.folder("Alpha", own_run)
    assert (reused.run_id, reused.name) == (SOURCE_RUN, "Alpha")
    assert repr(reused) == f"runs:/{SOURCE_RUN}/Alpha"
    skipped = context.folder("Zeta", own_run)
    assert (skipped.run_id, skipped.name) == (SOURCE_RUN, "Zeta")


def test_folder_of_a_local_reuse_source_is_that_folder(tmp_path):
    context = sample()
    context.tasks["Alpha"].source = str(tmp_path / "kept" / "Alpha")
    folder = context.folder("Alpha", "b" * 32)
    assert folder.run_id is None
    assert folder.folder == tmp_path / "kept" / "Alpha"


def test_folder_of_a_task_that_runs_or_is_copied_is_the_runs_own():
    context = sample()
    own_run = "b" * 32
    for family in ("Beta", "Mid"):  # Mid is COPIED: its source is where it came from
        folder = context.folder(family, own_run)
        assert (folder.run_id, folder.name) == (own_run, family)
        assert repr(folder) == f"runs:/{own_run}/{family}"


def test_folder_of_a_task_not_in_the_plan_is_the_runs_own():
    folder = sample().folder("Unknown", "c" * 32)
    assert (folder.run_id, folder.name) == ("c" * 32, "Unknown")


def test_input_dir_relative_is_under_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path / "checkout"))
    assert sample().input_dir() == tmp_path / "checkout" / "data" / "in"


def test_input_dir_absolute_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path / "checkout"))
    context = sample()
    context.input = str(tmp_path / "elsewhere")
    assert context.input_dir() == tmp_path / "elsewhere"


def make_run(client, tmp_path: Path) -> tuple[str, Path]:
    experiment = client.get_experiment_by_name("ctx")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("ctx", artifact_location=str(tmp_path / "artifacts"))
    )
    run = client.create_run(experiment_id)
    return run.info.run_id, Path(run.info.artifact_uri)


@pytest.mark.usefixtures("settings")
def test_save_then_load_from_the_store(client, tmp_path):
    run_id, artifacts = make_run(client, tmp_path)
    original = sample()
    original.save(run_id)
    written = artifacts / CONTEXT_ARTIFACT
    assert written.is_file()
    assert RunContext.from_json(written.read_text()) == original
    loaded = run_context.load(run_id)
    assert loaded == original
    assert list(loaded.tasks) == list(original.tasks)
    assert run_context.load(run_id) is loaded, "read once per process"


@pytest.mark.usefixtures("settings")
def test_load_of_a_run_without_a_context_raises_no_context(client, tmp_path):
    run_id, _ = make_run(client, tmp_path)
    client.log_text(run_id, "other", "something/else.txt")
    with pytest.raises(NoContext, match=run_id):
        run_context.load(run_id)


class CtxTask(PipelineTask):
    seed = luigi.IntParameter(default=0)
    columns = luigi.ListParameter(default=[])


@pytest.mark.usefixtures("settings")
def test_a_tasks_parameters_are_those_of_its_run_whatever_config_luigi_has(client, tmp_path):
    """A sweep builds runs of several configs in one process: each task takes its run's."""
    first, _ = make_run(client, tmp_path)
    second, _ = make_run(client, tmp_path)
    RunContext("CtxTask", "in", {"CtxTask": {"seed": 3, "columns": ["a"]}}, {}).save(first)
    RunContext("CtxTask", "in", {"CtxTask": {"seed": 4}}, {}).save(second)
    assert (CtxTask(run_id=first).seed, CtxTask(run_id=first).columns) == (3, ("a",))
    assert (CtxTask(run_id=second).seed, CtxTask(run_id=second).columns) == (4, ())
    assert CtxTask(run_id=first).task_id != CtxTask(run_id=second).task_id
    assert CtxTask(run_id=first, seed=9).seed == 9, "a value given explicitly wins"
    assert CtxTask(run_id="not-a-run").seed == 0, "no run: Luigi's config and defaults"


def test_a_zombie_or_a_recycled_pid_is_no_runner_and_a_live_one_is():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        record = run_context.RunnerRecord(
            socket.gethostname(), child.pid, run_context.process_start(child.pid), 0.0, 60.0
        )
        assert record.process_start and not run_context.runner_gone(record, started=0.0)
        recycled = dataclasses.replace(record, process_start=str(int(record.process_start) - 1))
        assert run_context.runner_gone(recycled, started=0.0)
        child.stdin.close()  # it exits; unreaped, it stays in /proc as a zombie
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("the child never became a zombie")
        assert run_context.runner_gone(record, started=0.0)
    finally:
        child.wait()
