"""The task base class, run in process by Luigi against a throwaway store: outputs, records,
`load()`, tracking once, secrets and failures."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

import luigi
from luigi.configuration import get_config
from luigi.execution_summary import LuigiStatusCode
from luigi.parameter import ParameterVisibility

from luigiflow import runstate
from luigiflow.names import CONTEXT_ARTIFACT, ERRORS_FOLDER, MANIFEST, record_path
from luigiflow.runstate import RUN, RunContext, TaskPlan
from luigiflow.sourcecode import unqualified_loads
from luigiflow.task import AmbiguousInput, PipelineTask, requires

# Task families start with `Ut`: Luigi registers every task class by name, for the session.


class UtA(PipelineTask):
    outputs = {"train": "train.json"}

    def run(self):
        self.save("train", {"made_by": "UtA"})


class UtB(PipelineTask):
    outputs = {"train": "train.json", "extra": "extra.json"}

    def run(self):
        self.save("train", {"made_by": "UtB"})
        self.save("extra", [1, 2, 3])


@requires(UtA, UtB)
class UtQualified(PipelineTask):
    """Reads the name both upstream tasks make, saying which each time."""

    outputs = {"both": "both.json"}

    def run(self):
        from_a = self.load("train", of=UtA)
        from_b = self.load("train", of="UtB")
        self.save("both", {"a": from_a, "b": from_b, "extra": self.load("extra")})
        self.log_metrics(rows=2)


@requires(UtA, UtB)
class UtUnqualified(PipelineTask):
    """Reads `train` without saying which: ambiguous."""

    outputs = {"out": "out.json"}

    def run(self):
        self.save("out", self.load("train"))


class UtSingle(PipelineTask):
    outputs = {"out": "out.json"}

    def requires(self):
        return UtA(run_id=self.run_id)

    def run(self):
        self.save("out", {"single": self.load("train")})


class UtList(PipelineTask):
    outputs = {"out": "out.json"}

    def requires(self):
        return [UtA(run_id=self.run_id), UtExtraOnly(run_id=self.run_id)]

    def run(self):
        self.save("out", {"train": self.load("train"), "other": self.load("other")})


class UtDict(PipelineTask):
    outputs = {"out": "out.json"}

    def requires(self):
        return {"first": UtA(run_id=self.run_id), "second": UtExtraOnly(run_id=self.run_id)}

    def run(self):
        self.save("out", {"train": self.load("train"), "other": self.load("other")})


class UtExtraOnly(PipelineTask):
    outputs = {"other": "other.json"}

    def run(self):
        self.save("other", "other value")


class UtBase(PipelineTask):
    outputs = {"value": "value.json"}

    def run(self):
        self.save("value", {"from": "base"})


class UtChild(UtBase):
    """Extends its parent's run: the parent's body runs inside the child's one attempt."""

    def run(self):
        super().run()
        self.log_metrics(child=1.0)


class UtSecret(PipelineTask):
    api_token = luigi.Parameter(default="s3cret-value")
    level = luigi.IntParameter(default=1)


class UtCredentials:
    """A mixin of parameters, shared by several tasks."""

    service_token = luigi.Parameter(default="")


class UtMixedIn(UtCredentials, PipelineTask):
    level = luigi.IntParameter(default=1)


class UtBoom(PipelineTask):
    outputs = {"out": "out.json"}

    def run(self):
        self.save("out", {"half": True})
        raise ValueError("boom: the last line")


# helpers --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def empty_luigi_config(settings, monkeypatch):
    """No config for these tasks (their parameters all have defaults), whatever the session
    loaded before; and a fresh embedded store for each test."""
    monkeypatch.setattr(get_config("toml"), "data", {})


@pytest.fixture
def run(client, tmp_path):
    """A run of an experiment whose artifacts live in tmp_path: (run id, artifact folder)."""
    experiment = client.create_experiment("ut", artifact_location=str(tmp_path / "artifacts"))
    created = client.create_run(experiment)
    return created.info.run_id, Path(created.info.artifact_uri)


def plan(run_id: str, *families: str) -> RunContext:
    """A hand-made run context where every task runs, and save it with the run."""
    tasks = {
        f: TaskPlan(f, [], RUN, reason="test", fingerprint={"digest": f"d-{f}"}) for f in families
    }
    context = RunContext(root=families[-1], input="input", config={}, tasks=tasks)
    context.save(run_id)
    return context


def build(*tasks: PipelineTask):
    return luigi.build(list(tasks), local_scheduler=True, workers=1, detailed_summary=True)


def manifest(artifacts: Path, family: str) -> dict:
    return json.loads((artifacts / family / MANIFEST).read_text())


def task_record(artifacts: Path, family: str) -> dict:
    return json.loads((artifacts / record_path(family)).read_text())


# finding ambiguous loads ----------------------------------------------------------------------


def test_unqualified_loads_are_found_in_the_source():
    assert unqualified_loads(UtUnqualified) == {"train"}
    assert unqualified_loads(UtQualified) == {"extra"}, "of= makes a load qualified"
    assert unqualified_loads(UtA) == set()
    assert unqualified_loads(UtList) == {"train", "other"}


def test_unqualified_loads_of_a_subclass_include_its_parents():
    class UtReadsViaParent(UtUnqualified):
        pass

    assert unqualified_loads(UtReadsViaParent) == {"train"}


# a pipeline, in process -----------------------------------------------------------------------


def test_outputs_manifest_and_record_of_a_task_that_ran(run, client):
    run_id, artifacts = run
    context = plan(run_id, "UtA", "UtB", "UtQualified")
    assert (artifacts / CONTEXT_ARTIFACT).is_file()
    result = build(UtQualified(run_id=run_id))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    for family in ("UtA", "UtB", "UtQualified"):
        written = manifest(artifacts, family)
        assert written["task"] == family
        assert written["run_id"] == run_id
        assert written["fingerprint"] == context.tasks[family].fingerprint
        saved = task_record(artifacts, family)
        assert saved["status"] == runstate.FINISHED
        assert saved["host"] == socket.gethostname()
        assert saved["pid"] == os.getpid()
        assert saved["why_run"] == "test"
        assert saved["duration_s"] is not None and saved["ended"]
        assert (artifacts / family / "_card.html").is_file()

    assert manifest(artifacts, "UtB")["outputs"] == {"train": "train.json", "extra": "extra.json"}
    assert json.loads((artifacts / "UtA" / "train.json").read_text()) == {"made_by": "UtA"}
    both = json.loads((artifacts / "UtQualified" / "both.json").read_text())
    assert both == {"a": {"made_by": "UtA"}, "b": {"made_by": "UtB"}, "extra": [1, 2, 3]}
    assert manifest(artifacts, "UtQualified")["upstream"] == {
        "UtA": f"runs:/{run_id}/UtA",
        "UtB": f"runs:/{run_id}/UtB",
    }

    tags = client.get_run(run_id).data.tags
    recorded = hashlib.sha256((artifacts / "UtQualified" / MANIFEST).read_bytes()).hexdigest()
    assert tags["luigiflow.task.UtQualified.fingerprint"] == f"d-UtQualified:{recorded}"
    assert not any(key.endswith(".status") for key in tags), "statuses are in the records"
    metrics = client.get_run(run_id).data.metrics
    assert metrics["rows"] == 2.0 and metrics["duration_s/UtQualified"] >= 0

    # once complete, the outputs are read back the same way outside run()
    downstream = UtQualified(run_id=run_id)
    assert downstream.complete()
    assert downstream.load("train", of=UtA) == {"made_by": "UtA"}
    assert downstream.load("train", of="UtB") == {"made_by": "UtB"}
    assert downstream.read_output("both") == both


def test_an_unqualified_load_of_an_ambiguous_name_raises(run):
    run_id, artifacts = run
    plan(run_id, "UtA", "UtB", "UtUnqualified")
    result = build(UtUnqualified(run_id=run_id))
    assert result.status == LuigiStatusCode.FAILED
    assert not (artifacts / "UtUnqualified" / MANIFEST).exists()
    error = task_record(artifacts, "UtUnqualified")["error"]
    assert error.startswith("luigiflow.task.AmbiguousInput: ")
    assert "UtA and UtB" in error

    task = UtUnqualified(run_id=run_id)
    with pytest.raises(AmbiguousInput, match=r"UtA and UtB both make") as caught:
        task.load("train")
    assert "of=UtA" in str(caught.value)
    assert task.load("train", of=UtB) == {"made_by": "UtB"}
    with pytest.raises(KeyError, match="has no input 'nothing'"):
        task.load("nothing")


@pytest.mark.parametrize("task_class", [UtSingle, UtList, UtDict])
def test_requires_may_return_a_task_a_list_or_a_dict(run, task_class):
    run_id, artifacts = run
    family = task_class.get_task_family()
    plan(run_id, "UtA", "UtExtraOnly", family)
    result = build(task_class(run_id=run_id))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    out = json.loads((artifacts / family / "out.json").read_text())
    if task_class is UtSingle:
        assert out == {"single": {"made_by": "UtA"}}
        assert [t.task_family for t in task_class(run_id=run_id).upstream()] == ["UtA"]
    else:
        assert out == {"train": {"made_by": "UtA"}, "other": "other value"}
        upstream = {t.task_family for t in task_class(run_id=run_id).upstream()}
        assert upstream == {"UtA", "UtExtraOnly"}
    assert set(manifest(artifacts, family)["upstream"]) == (
        {"UtA"} if task_class is UtSingle else {"UtA", "UtExtraOnly"}
    )


def test_a_run_calling_super_run_is_tracked_once(run, client, monkeypatch):
    run_id, artifacts = run
    plan(run_id, "UtChild")
    written: list[tuple[str, str]] = []
    real_write = runstate.write_record

    def counting(run_id_: str, record: runstate.TaskRecord) -> None:
        written.append((record.task, record.status))
        real_write(run_id_, record)

    monkeypatch.setattr(runstate, "write_record", counting)
    result = build(UtChild(run_id=run_id))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert written == [("UtChild", runstate.RUNNING), ("UtChild", runstate.FINISHED)]
    assert manifest(artifacts, "UtChild")["outputs"] == {"value": "value.json"}
    assert json.loads((artifacts / "UtChild" / "value.json").read_text()) == {"from": "base"}
    assert task_record(artifacts, "UtChild")["status"] == runstate.FINISHED
    assert not (artifacts / "UtBase").exists(), "the parent's family is not involved"
    assert client.get_run(run_id).data.metrics.keys() == {"child", "duration_s/UtChild"}


def test_a_secret_named_parameter_is_private():
    param = dict(UtSecret.get_params())["api_token"]
    assert param.visibility == ParameterVisibility.PRIVATE
    assert dict(UtSecret.get_params())["level"].visibility == ParameterVisibility.PUBLIC
    task = UtSecret(run_id="r1", api_token="hunter2-value", level=4)
    assert task.api_token == "hunter2-value"
    assert "hunter2" not in task.task_id
    assert task.to_str_params(only_significant=True) == {"run_id": "r1", "level": "4"}
    assert task.significant_params() == {"level": "4"}
    other = UtSecret(run_id="r1", api_token="another-secret", level=4)
    assert other.task_id == task.task_id, "the secret is no part of the task's identity"
    assert UtSecret(run_id="r1", level=5).task_id != task.task_id


def test_a_task_takes_its_values_from_its_run_context_and_a_secret_from_the_environment(
    monkeypatch,
):
    """The one channel: a run's (here a draft's) context gives the values; a secret travels
    as a reference, resolved from this process's environment when the task is built, and a
    secret the context only masks leaves the task its default."""
    from luigiflow.runstate import draft

    monkeypatch.setenv("UT_TOKEN_VARIABLE", "resolved-token-value")
    run_id = draft({"UtSecret": {"api_token": "${UT_TOKEN_VARIABLE}", "level": 3}}, "UtSecret", "")
    task = UtSecret(run_id=run_id)
    assert (task.api_token, task.level) == ("resolved-token-value", 3)
    masked = draft({"UtSecret": {"api_token": "***", "level": 2}}, "UtSecret", "")
    assert UtSecret(run_id=masked).api_token == "s3cret-value"
    assert UtSecret(run_id=masked, level=9).level == 9, "an argument given wins"
    assert UtSecret(run_id="not-a-run").level == 1, "no context: the defaults"


def test_a_secret_named_parameter_from_a_mixin_is_private_too():
    task = UtMixedIn(run_id="r1", service_token="hunter2-value")
    assert "hunter2" not in task.task_id
    assert task.significant_params() == {"level": "1"}


def test_a_failing_task_leaves_no_manifest_and_records_why(run, client):
    run_id, artifacts = run
    plan(run_id, "UtBoom")
    result = build(UtBoom(run_id=run_id))
    assert result.status == LuigiStatusCode.FAILED
    assert not (artifacts / "UtBoom" / MANIFEST).exists()
    assert not UtBoom(run_id=run_id).complete()
    saved = task_record(artifacts, "UtBoom")
    assert saved["status"] == runstate.FAILED
    assert saved["error"] == "ValueError: boom: the last line"
    assert saved["pid"] == os.getpid()
    traceback_text = (artifacts / ERRORS_FOLDER / "UtBoom.txt").read_text()
    assert "Traceback" in traceback_text and "raise ValueError" in traceback_text
    tags = client.get_run(run_id).data.tags
    assert "luigiflow.task.UtBoom.fingerprint" not in tags, "no fingerprint for later runs"


def test_outputs_belong_inside_run(run):
    run_id, _ = run
    plan(run_id, "UtA")
    with pytest.raises(RuntimeError, match="inside run"):
        UtA(run_id=run_id).save("train", {})
    with pytest.raises(KeyError, match="has no 'nope'"):
        UtA(run_id=run_id).output_path("nope")
