"""Luigi's central scheduler shared by the processes of a run: what luigid knows of a run, when
a run can be joined, and when building in rounds stops. A real luigid; the tasks it knows are
added through Luigi's own RPC, as a worker adds them."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request

import pytest
from conftest import free_port, service, start_runner
from luigi.rpc import RemoteScheduler

from luigiflow import runstate, scheduler, store
from luigiflow.config import ConfigError
from luigiflow.runstate import RUN, RunContext, TaskPlan, TaskRecord

pytestmark = pytest.mark.slow


def add(url: str, family: str, run_id: str, status: str = "PENDING") -> None:
    """A task of `run_id` in luigid, in `status`, as a worker reports it."""
    RemoteScheduler(url).add_task(
        worker="test-worker",
        task_id=f"{family}__{run_id}",
        family=family,
        params={"run_id": run_id},
        status=status,
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """One luigid for the tests of this module: each looks at run ids of its own."""
    folder = tmp_path_factory.mktemp("luigid")
    command = ["luigid", "--address", "127.0.0.1", "--state-path", str(folder / "state")]
    with service([*command, "--logdir", str(folder)], "/api/graph", folder) as url:
        yield url


def test_luigid_that_does_not_answer_is_named_before_anything():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"luigid at {url} does not answer"):
        scheduler.check(url)


def test_the_tasks_of_a_run_are_its_own_and_not_those_of_a_run_whose_id_contains_it(url):
    run_id = "a" * 32
    add(url, "Trainer", run_id)
    add(url, "Prediction", run_id, "DONE")
    add(url, "Trainer", run_id + "b")
    assert scheduler.tasks_of(url, run_id) == {"Trainer": "PENDING", "Prediction": "DONE"}
    assert scheduler.tasks_of(url, run_id, status="DONE") == {"Prediction": "DONE"}
    assert scheduler.tasks_of(url, "c" * 32) == {}


def test_a_run_is_joinable_only_through_the_luigid_that_knows_its_tasks(url):
    run_id = "d" * 32
    with pytest.raises(ConfigError, match="built by a scheduler inside its runner"):
        scheduler.check_joinable(run_id, "", url)
    with pytest.raises(ConfigError, match=f"knows no task of run {run_id}"):
        scheduler.check_joinable(run_id, "http://elsewhere:8082", url, waits=1)
    add(url, "Trainer", run_id)
    scheduler.check_joinable(run_id, url, url, waits=1)


@pytest.fixture
def run(client, settings) -> tuple[str, RunContext]:
    """A RUNNING run whose context plans one task, Trainer, to run."""
    experiment = store.experiment(client, "scheduler", settings)
    run_id = client.create_run(experiment.experiment_id).info.run_id
    context = RunContext("Trainer", "input", {}, {"Trainer": TaskPlan("Trainer", [], RUN)})
    context.save(run_id)
    return run_id, context


def test_building_in_rounds_goes_on_until_the_task_is_complete(url, run):
    run_id, context = run
    rounds: list[int] = []

    def build_once() -> str:
        rounds.append(len(rounds))
        return "waiting"

    assert scheduler.build_in_rounds(url, run_id, context, build_once, lambda: len(rounds) > 1)
    assert len(rounds) == 2, "a second round once luigid had nothing for this process"


def test_building_in_rounds_stops_when_a_task_failed_elsewhere_or_the_run_ended(
    url, run, client, caplog
):
    run_id, context = run

    def failed_on_another_host() -> str:
        record = TaskRecord("Trainer", runstate.FAILED, host="elsewhere", started=runstate.now())
        runstate.write_record(run_id, record)
        return "waiting"

    assert not scheduler.build_in_rounds(url, run_id, context, failed_on_another_host, bool)
    assert "cannot finish: Trainer failed" in caplog.text

    caplog.clear()
    client.set_terminated(run_id, "KILLED")
    assert not scheduler.build_in_rounds(url, run_id, context, lambda: "waiting", bool)
    assert "cannot finish: the run is KILLED" in caplog.text


def test_an_old_failure_of_a_resumed_run_does_not_stop_its_rounds(url, run):
    run_id, context = run
    runstate.write_record(run_id, TaskRecord("Trainer", runstate.FAILED, started="2026-01-01"))
    rounds: list[int] = []

    def build_once() -> str:
        rounds.append(len(rounds))
        return "waiting" if len(rounds) < 2 else "done"

    assert scheduler.build_in_rounds(url, run_id, context, build_once, lambda: False)
    assert len(rounds) == 2


def test_a_failed_run_waits_for_what_other_processes_still_run(url):
    run_id = "e" * 32
    add(url, "Trainer", run_id, "RUNNING")
    done_later = threading.Timer(1.5, add, (url, "Trainer", run_id, "DONE"))
    done_later.start()
    scheduler.wait_for_others(url, run_id, seconds=60)
    assert scheduler.tasks_of(url, run_id) == {"Trainer": "DONE"}
    started = time.monotonic()
    scheduler.wait_for_others(f"http://127.0.0.1:{free_port()}", run_id, seconds=60)
    assert time.monotonic() - started < 30, "a luigid that is gone is not waited for"


def test_two_invocations_on_one_luigid_never_share_a_task(project, luigid):
    runners = [
        start_runner(
            project,
            "--scheduler-url",
            luigid,
            "--workers",
            "2",
            "--no-cache",
            "--set",
            f"Trainer.seed={s}",
        )
        for s in (0, 1)
    ]
    outputs = [r.communicate(timeout=300) for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    done = json.loads(
        urllib.request.urlopen(
            f"{luigid}/api/task_list?data="
            + urllib.parse.quote(
                json.dumps({"status": "DONE", "upstream_status": "", "search": ""})
            )
        ).read()
    )["response"]
    run_ids = {task["params"]["run_id"] for task in done.values()}
    families = sorted(task["name"] for task in done.values())
    assert len(run_ids) == 2, "each invocation's tasks carry its own run id"
    tasks = ["Preprocessor", "Splitter", "Trainer", "Evaluator", "Register", "Prediction"]
    assert families == sorted(tasks * 2), "every task ran in both"
