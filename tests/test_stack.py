"""The shared stack: the compose file itself, its services started from it, and a team on it
(a colleague's clone reusing outputs, a worker from another clone joining a run)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import (
    REPO,
    TRAINER_TOP,
    copy_project,
    edit_task,
    gate_trainer,
    run_runner,
    runner_env,
    runs,
    start_runner,
    wait_for_file,
    wait_for_line,
    wait_until_asleep,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from stack import AUTH, COMPOSE, STACK_ENV, compose_config, resolved, start_stack, stop_group

# One test process starts the stack (PostgreSQL, MLflow's server, luigid) and runs these.
pytestmark = pytest.mark.xdist_group("stack")

# Two independent branches after the Preprocessor, so that two workers both have work at once.
BRANCHES = """
import os, socket, time

from luigiflow import PipelineTask, requires
from tasks.preprocessor import Preprocessor


class Branch(PipelineTask):
    outputs = {"where": "where.json"}

    def run(self) -> None:
        time.sleep(float(os.environ.get("BRANCH_SECONDS", "4")))
        if os.environ.get("STALL_BRANCHES"):
            time.sleep(600)
        self.save("where", {"host": socket.gethostname(), "pid": os.getpid()})


@requires(Preprocessor)
class Left(Branch):
    pass


@requires(Preprocessor)
class Right(Branch):
    pass


@requires(Left, Right)
class Both(PipelineTask):
    outputs = {"both": "both.json"}

    def run(self) -> None:
        self.save("both", [self.load("where", of="Left"), self.load("where", of="Right")])
"""


def read_json(client, run_id: str, path: str, folder) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(folder))).read_text())


def with_branches(project, gate=None):
    """The branching pipeline; with `gate`, its Preprocessor waits for that file, so that a
    test can have a worker join before the branches are ready."""
    if gate is not None:
        edit_task(
            project,
            "preprocessor",
            '        self.save("train", self.typed(self.load("train.csv")))',
            "        import pathlib, time\n"
            f"        while not pathlib.Path({str(gate)!r}).exists():\n"
            "            time.sleep(0.05)",
        )
    (project / "src/tasks/branches.py").write_text(BRANCHES)
    init = project / "src/tasks/__init__.py"
    init.write_text(init.read_text() + "from tasks.branches import Both, Left, Right  # noqa\n")
    return project


def start_joined_branches(stack, tmp_path, creator_env: dict, joiner_env: dict, *joiner_args):
    """The branching pipeline started from one clone, and a second clone joined to its run;
    the branches become ready once both are there. Returns (creator, joiner, run id)."""
    gate = tmp_path / "go"
    creator_project = with_branches(copy_project(tmp_path / "one"), gate)
    joiner_project = with_branches(copy_project(tmp_path / "two"), gate)
    creator = start_runner(creator_project, "--task", "Both", "--no-cache", env=creator_env)
    run_id = re.search(r"Run (\w+) started", wait_for_line(creator, " started: Both")).group(1)
    joiner = start_runner(joiner_project, "--join", run_id, *joiner_args, env=joiner_env)
    try:
        wait_for_line(joiner, f"Joined run {run_id}")
    finally:
        gate.touch()
    return creator, joiner, run_id


# --- the compose file ------------------------------------------------------------------------


def test_the_compose_file_validates_and_binds_only_the_loopback_by_default():
    config = resolved()
    assert set(config["services"]) == {"db", "mlflow", "luigid"}
    published = [p for s in config["services"].values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published), published
    lan = compose_config(**STACK_ENV, LUIGIFLOW_BIND="192.168.1.20")
    assert lan.returncode == 0 and "192.168.1.20:5000:5000" in lan.stdout
    mlflow = config["services"]["mlflow"]
    assert mlflow["depends_on"]["db"]["condition"] == "service_healthy"
    assert "--serve-artifacts" in mlflow["command"] and "--allowed-hosts" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "healthcheck" in config["services"]["db"]
    assert {"db", "artifacts", "scheduler"} <= set(config["volumes"])


def test_the_compose_file_holds_no_secret_and_pins_its_images():
    missing = compose_config()
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
    for path in (COMPOSE, AUTH):
        raw = yaml.safe_load(path.read_text())
        for service in raw["services"].values():
            for key, value in (service.get("environment") or {}).items():
                if re.search("PASSWORD|SECRET|TOKEN", key) or "postgresql://" in str(value):
                    assert re.fullmatch(r"(.*\$\{\w+:\?[^}]*\}.*)", str(value)), (key, value)
            image = service.get("image", "")
            assert not image or re.search(r":\d[\w.-]*$", image), f"unpinned image {image}"
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert "-c /tmp/constraints.txt" in dockerfile and "psycopg2-binary" in dockerfile
    assert re.search(r"^psycopg2-binary==", (REPO / "constraints.txt").read_text(), re.M)
    auth = resolved(COMPOSE, AUTH)["services"]["mlflow"]
    assert auth["command"][2:4] == ["--app-name", "basic-auth"]


def test_the_shared_profile_points_at_the_ports_the_stack_publishes():
    shared = dict(
        line.split("=", 1)
        for line in (REPO / ".env.shared").read_text().splitlines()
        if line and not line.startswith("#")
    )
    config = resolved()["services"]
    for service, variable in (
        ("mlflow", "MLFLOW_TRACKING_URI"),
        ("luigid", "LUIGIFLOW_SCHEDULER_URL"),
    ):
        host, port, _ = str(config[service]["ports"][0]).split(":", 2)
        assert shared[variable] == f"http://{host}:{port}", (service, shared[variable])


# --- the services, started from it ---------------------------------------------------------


@pytest.mark.slow
def test_each_service_starts_from_the_compose_file_and_answers(stack):
    with urllib.request.urlopen(stack.tracking_uri + "/health", timeout=10) as response:
        assert response.read().decode().strip() == "OK"
    check = stack.config["services"]["db"]["healthcheck"]["test"]
    command = [*check[1].split(), "--host", stack.database.host, "--port", str(stack.database.port)]
    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0, command
    page = urllib.request.urlopen(stack.scheduler_url + "/static/visualiser/index.html")
    assert page.status == 200 and b"Luigi" in page.read()
    tables = stack.database.dump(stack.dbname)
    assert "CREATE TABLE public.experiments" in tables, "MLflow's schema lives in PostgreSQL"


@pytest.mark.slow
def test_the_pipeline_on_the_stack_and_a_colleague_s_clone_reuses_it(stack, tmp_path):
    # Two people: their own folders and their own user names (what MLflow records as the user).
    alice, bob = (stack.env(USER=name, LOGNAME=name) for name in ("alice", "bob"))
    first = copy_project(tmp_path / "alice" / "luigiflow")
    made = run_runner(first, "--profile", "shared", env=alice, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    run_id = re.search(r"Run (\w+) started", made.stdout).group(1)
    client = MlflowClient(stack.tracking_uri)
    context = read_json(client, run_id, "luigiflow/context.json", tmp_path)
    assert context["scheduler"] == stack.scheduler_url

    second = copy_project(tmp_path / "bob" / "work" / "luigiflow")
    reused = run_runner(second, "--profile", "shared", env=bob, timeout=600)
    assert reused.returncode == 0, reused.stdout + reused.stderr
    assert re.search(r"Prediction\s+reused\s+from runs:/" + run_id, reused.stdout), reused.stdout
    assert " ran " not in reused.stdout
    second_id = re.search(r"Run (\w+) started", reused.stdout).group(1)
    users = [client.get_run(i).data.tags["mlflow.user"] for i in (run_id, second_id)]
    assert users == ["alice", "bob"]


@pytest.mark.slow
def test_a_worker_from_another_clone_joins_a_run_and_shares_its_tasks(stack, tmp_path):
    env = stack.env(BRANCH_SECONDS="8")
    creator, joiner, run_id = start_joined_branches(stack, tmp_path, env, env)
    joined_out, joined_err = joiner.communicate(timeout=600)
    stdout, stderr = creator.communicate(timeout=600)
    assert creator.returncode == 0, stdout + stderr
    assert joiner.returncode == 0, joined_out + joined_err

    client = MlflowClient(stack.tracking_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    records = {}
    for family in ("Preprocessor", "Left", "Right", "Both"):
        records[family] = read_json(client, run_id, f"luigiflow/tasks/{family}.json", tmp_path)
        listed = [f.path for f in client.list_artifacts(run_id, family)]
        assert listed.count(f"{family}/_manifest.json") == 1, listed
    pids = {family: record["pid"] for family, record in records.items()}
    assert len(set(pids.values())) == 2, f"both processes ran tasks: {pids}\n{joined_out}"
    assert pids["Left"] != pids["Right"], "the two branches ran in different processes"
    left, right = records["Left"], records["Right"]
    begin = max(datetime.fromisoformat(left["started"]), datetime.fromisoformat(right["started"]))
    end = min(datetime.fromisoformat(left["ended"]), datetime.fromisoformat(right["ended"]))
    assert begin < end, "the branches ran at the same time"
    worker_logs = [f.path for f in client.list_artifacts(run_id, "logs/workers")]
    assert [path.rsplit("-", 1)[1] for path in worker_logs] == [str(joiner.pid)], worker_logs


@pytest.mark.slow
def test_a_worker_from_another_clone_joins_a_sweep_and_takes_a_child_s_task(stack, tmp_path):
    gate, env = tmp_path / "go", stack.env()
    creator_project = gate_trainer(copy_project(tmp_path / "one"), gate)
    joiner_project = gate_trainer(copy_project(tmp_path / "two"), gate)
    creator = start_runner(creator_project, "--sweep", "Trainer.seed=0,1", "--no-cache", env=env)
    parent = re.search(r"Run (\w+) started", wait_for_line(creator, "started: a sweep")).group(1)
    joiner = start_runner(joiner_project, "--join", parent, env=env)
    try:
        wait_for_file(creator_project / "asleep")  # each holds one Trainer at the gate
        wait_for_line(joiner, f"Joined run {parent}: a sweep of 2 runs")
        wait_for_file(joiner_project / "asleep")
    finally:
        gate.touch()
    joined_out, joined_err = joiner.communicate(timeout=600)
    stdout, stderr = creator.communicate(timeout=600)
    assert creator.returncode == 0, stdout + stderr
    assert joiner.returncode == 0, joined_out + joined_err

    client = MlflowClient(stack.tracking_uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert client.get_run(parent).info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    pids = {
        read_json(client, c.info.run_id, "luigiflow/tasks/Trainer.json", tmp_path)["pid"]
        for c in children
    }
    assert pids == {creator.pid, joiner.pid}, "each process trained one child"
    assert "Registration: models:/titanic" in stdout


@pytest.mark.slow
def test_a_joining_worker_with_other_code_or_inputs_is_refused(stack, tmp_path):
    gate = tmp_path / "go"
    project = gate_trainer(copy_project(tmp_path / "creator"), gate)
    env = stack.env()
    creator = start_runner(project, "--no-cache", env=env)
    run_id = re.search(r"Run (\w+) started", wait_for_line(creator, " started: ")).group(1)
    try:
        other_code = gate_trainer(copy_project(tmp_path / "other-code"), gate)
        edit_task(other_code, "trainer", TRAINER_TOP, "        _ = 'another version'")
        refused = run_runner(other_code, "--join", run_id, env=env)
        assert refused.returncode == 2
        assert "code differs from the run's: Trainer (tasks.trainer)" in refused.stderr

        other_input = gate_trainer(copy_project(tmp_path / "other-input"), gate)
        train = other_input / "input/train.csv"
        train.write_text(train.read_text() + train.read_text().splitlines()[-1] + "\n")
        refused = run_runner(other_input, "--join", run_id, env=env)
        assert refused.returncode == 2
        assert "train.csv differs from the file the run was planned with" in refused.stderr

        with_set = run_runner(project, "--join", run_id, "--set", "Trainer.seed=1", env=env)
        assert with_set.returncode == 2 and "--set does not go with it" in with_set.stderr
    finally:
        gate.touch()
        creator.communicate(timeout=600)
    assert creator.returncode == 0
    ended = run_runner(project, "--join", run_id, env=env)
    assert ended.returncode == 2 and "is FINISHED: only a RUNNING run is joined" in ended.stderr


@pytest.mark.slow
def test_a_run_without_luigid_cannot_be_joined(stack, tmp_path):
    gate = tmp_path / "go"
    project = gate_trainer(copy_project(tmp_path / "creator"), gate)
    env = stack.env()
    del env["LUIGIFLOW_SCHEDULER_URL"]  # a scheduler inside the runner
    creator = start_runner(project, "--no-cache", env=env)
    run_id = re.search(r"Run (\w+) started", wait_for_line(creator, " started: ")).group(1)
    try:
        refused = run_runner(project, "--join", run_id, env=stack.env())
    finally:
        gate.touch()
        creator.communicate(timeout=600)
    assert refused.returncode == 2
    assert "built by a scheduler inside its runner" in refused.stderr


@pytest.mark.slow
def test_a_run_in_the_embedded_store_cannot_be_joined(stack, tmp_path):
    """Through luigid but with its outputs in a local folder: a second worker would write into
    the very folder that counts, so joining is refused."""
    gate = tmp_path / "go"
    project = gate_trainer(copy_project(tmp_path / "creator"), gate)
    env = runner_env(LUIGIFLOW_SCHEDULER_URL=stack.scheduler_url)
    creator = start_runner(project, "--no-cache", env=env)
    run_id = re.search(r"Run (\w+) started", wait_for_line(creator, " started: ")).group(1)
    try:
        refused = run_runner(project, "--join", run_id, env=env)
    finally:
        gate.touch()
        creator.communicate(timeout=600)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "keeps its outputs in a folder of the embedded store" in refused.stderr
    assert creator.returncode == 0


@pytest.mark.slow
def test_a_joined_worker_killed_mid_task_loses_only_that_task(stack, tmp_path):
    creator, joiner, run_id = start_joined_branches(
        stack, tmp_path, stack.env(BRANCH_SECONDS="8"), stack.env(STALL_BRANCHES="1"), "-v"
    )  # -v: the joiner says which task it starts
    taken = wait_for_line(joiner, " started", timeout=180)
    family = re.search(r"(Left|Right)\s+started", taken).group(1)
    time.sleep(1)
    joiner.kill()
    joiner.wait()
    began = time.monotonic()
    stdout, stderr = creator.communicate(timeout=600)
    assert creator.returncode == 0, stdout + stderr
    assert time.monotonic() - began < 180
    client = MlflowClient(stack.tracking_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    record = read_json(client, run_id, f"luigiflow/tasks/{family}.json", tmp_path)
    assert record["status"] == "FINISHED" and record["pid"] != joiner.pid
    listed = [f.path for f in client.list_artifacts(run_id, family)]
    assert listed.count(f"{family}/_manifest.json") == 1


@pytest.mark.slow
def test_a_joined_worker_paused_past_the_disconnect_delay_does_not_publish_over_the_task(
    stack, tmp_path
):
    """Paused (SIGSTOP) longer than luigid waits for a silent worker: its task is run again by
    the creator; when the paused worker wakes up, it finds the task finished and discards its
    own outputs instead of uploading them over the ones that count."""
    env = stack.env(BRANCH_SECONDS="6")
    creator, joiner, run_id = start_joined_branches(stack, tmp_path, env, env, "-v")
    taken = wait_for_line(joiner, " started", timeout=180)
    family = re.search(r"(Left|Right)\s+started", taken).group(1)
    time.sleep(1)  # inside the task's own code
    joiner.send_signal(signal.SIGSTOP)
    try:
        stdout, stderr = creator.communicate(timeout=600)
    finally:
        joiner.send_signal(signal.SIGCONT)
    joined_out, joined_err = joiner.communicate(timeout=300)
    assert creator.returncode == 0, stdout + stderr
    assert joiner.returncode == 0, joined_out + joined_err
    assert f"{family} was finished by another worker" in joined_out + joined_err

    client = MlflowClient(stack.tracking_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    record = read_json(client, run_id, f"luigiflow/tasks/{family}.json", tmp_path)
    assert record["status"] == "FINISHED" and record["pid"] == creator.pid
    where = read_json(client, run_id, f"{family}/where.json", tmp_path)
    assert where["pid"] == creator.pid, "the outputs are the creator's, not the paused worker's"
    listed = [f.path for f in client.list_artifacts(run_id, family)]
    assert listed.count(f"{family}/_manifest.json") == 1


@pytest.mark.slow
def test_a_scheduler_that_does_not_answer_is_refused_before_any_run(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_runner(project, env=runner_env(LUIGIFLOW_SCHEDULER_URL="http://127.0.0.1:9"))
    assert result.returncode == 2
    assert "luigid at http://127.0.0.1:9 does not answer" in result.stderr
    assert runs(project) == []


@pytest.mark.slow
def test_basic_auth_needs_the_right_password_and_keeps_it_out_of_the_store(
    auth_stack, tmp_path, monkeypatch
):
    project = copy_project(tmp_path / "project")
    password = STACK_ENV["MLFLOW_AUTH_ADMIN_PASSWORD"]
    wrong = run_runner(
        project,
        env=auth_stack.env(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="nope-1234"),
    )
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert f"the tracking server at {auth_stack.tracking_uri} refused the credentials" in (
        wrong.stderr
    )
    assert "Traceback" not in wrong.stderr and " started" not in wrong.stdout

    # A teammate: a user the admin created, not an admin, with the default permission.
    teammate = f"bob-{secrets.token_hex(6)}"
    request = urllib.request.Request(
        f"{auth_stack.tracking_uri}/api/2.0/mlflow/users/create",
        data=json.dumps({"username": "bob", "password": teammate}).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic("admin", password)},
    )
    urllib.request.urlopen(request, timeout=30).close()
    for user, secret in (("admin", password), ("bob", teammate)):
        if user == "bob":
            # By default a teammate only reads what others made: not even a tag on their runs.
            bob = auth_client(auth_stack, monkeypatch, "bob", teammate)
            [admins] = bob.search_runs([e.experiment_id for e in bob.search_experiments()])
            with pytest.raises(MlflowException, match="Permission denied"):
                bob.set_tag(admins.info.run_id, "x", "y")
            grant_edit(auth_stack, password, "bob", admins.info.experiment_id, "titanic")
        right = run_runner(
            project,
            "-v",
            env=auth_stack.env(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=secret),
            timeout=600,
        )
        assert right.returncode == 0, right.stdout + right.stderr
        assert secret not in right.stdout + right.stderr
    dump = auth_stack.database.dump(auth_stack.dbname)
    stored = [*auth_stack.folder.rglob("*"), *project.glob(".luigiflow/logs/**/*")]
    for secret in (password, teammate):
        assert secret not in dump
        for path in stored:
            if path.is_file() and path.suffix != ".log":  # the services' own output
                assert secret.encode() not in path.read_bytes(), path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_client(stack, monkeypatch, user: str, password: str) -> MlflowClient:
    """An MlflowClient of the auth stack as `user` (MLflow reads the credentials from the
    environment: the test's, until it ends)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(stack.tracking_uri)


def grant_edit(stack, admin_password: str, user: str, experiment_id: str, model: str) -> None:
    """What docs/team.md tells the admin to do for a teammate: EDIT on the experiment and on
    the registered model."""
    headers = {"Content-Type": "application/json", "Authorization": basic("admin", admin_password)}
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", model)):
        grant = {"resource_type": resource_type, "resource_id": resource_id, "permission": "EDIT"}
        request = urllib.request.Request(
            f"{stack.tracking_uri}/api/3.0/mlflow/users/permissions/grant",
            data=json.dumps({"username": user, **grant}).encode(),
            headers=headers,
        )
        urllib.request.urlopen(request, timeout=30).close()


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_then_comes_back(postgres, tmp_path):
    """The runner ends within the stated bound; after a restart, a rerun reuses what finished."""
    gate = tmp_path / "go"
    project = gate_trainer(copy_project(tmp_path / "project"), gate)
    stack_gen = start_stack(postgres, tmp_path / "stack", "mlflow_dies")
    stack = next(stack_gen)
    try:
        env = stack.env(MLFLOW_HTTP_REQUEST_TIMEOUT="15", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
        runner = start_runner(project, env=env)
        seen = wait_until_asleep(project, runner)
        first = re.search(r"Run (\w+) started", seen).group(1)
        stop_group(stack.processes["mlflow"])
        began = time.monotonic()
        gate.touch()
        stdout, stderr = runner.communicate(timeout=300)
        assert runner.returncode == 1, stdout + stderr
        assert time.monotonic() - began < 120
        assert "Run FAILED" in stdout and "The store failed while the run was ending" in stderr

        stack.start("mlflow")
        again = run_runner(project, env=env, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert re.search(r"Splitter\s+(reused|skipped)", again.stdout), again.stdout
        assert re.search(r"Trainer\s+finished in", again.stdout), again.stdout
        status = MlflowClient(stack.tracking_uri).get_run(first).info.status
        assert status in ("FAILED", "KILLED"), "left RUNNING, then marked by the next runner"
    finally:
        stack_gen.close()
