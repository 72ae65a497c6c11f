"""Fingerprints: what makes two outputs the same, said in words when they differ, and found
again in the tracking store."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("LUIGI_CONFIG_PARSER", "toml")

import luigi
import pytest
from conftest import complete_outputs

from luigiflow import caching, reasons
from luigiflow.caching import Fingerprint, Fingerprints
from luigiflow.names import FINGERPRINT_TAG, MANIFEST
from luigiflow.runstate import DEFERRED, REUSED, RUN, TaskPlan
from luigiflow.task import InputFile, PipelineTask


class FpSource(PipelineTask):
    rows = luigi.IntParameter(default=3)
    outputs = {"table": "table.json"}

    def input_files(self):
        return {"data": InputFile("data.csv")}


class FpUser(PipelineTask):
    outputs = {"result": "result.json"}

    def requires(self):
        return FpSource(run_id=self.run_id)


def fingerprint(**changes) -> Fingerprint:
    parts = {
        "task": "T",
        "params": {"seed": "0"},
        "inputs": {"data.csv": "aa"},
        "upstream": {"U": "bb"},
        "code": "cc",
        "versions": {"pandas": "3.0"},
    }
    return Fingerprint(**{**parts, **changes})


def test_the_digest_depends_on_every_part_and_on_nothing_else():
    base = fingerprint()
    assert base.digest == fingerprint().digest
    for change in (
        {"params": {"seed": "1"}},
        {"inputs": {"data.csv": "ab"}},
        {"upstream": {"U": "bc"}},
        {"code": "cd"},
        {"versions": {"pandas": "3.1"}},
    ):
        assert fingerprint(**change).digest != base.digest, change
    assert base.as_dict()["digest"] == base.digest


def test_differences_say_what_changed_the_task_s_own_first_and_empty_values_as_such():
    earlier = fingerprint(params={"seed": "0", "Dataset.target": '"Survived"', "name": ""})
    now = fingerprint(
        params={"seed": "1", "new": "x", "Dataset.target": '"Fare"', "name": "LogisticRegression"},
        inputs={"data.csv": "zz"},
        code="other",
        upstream={"U": "other"},
        versions={"pandas": "3.1"},
    )
    assert reasons.differences(now, earlier.as_dict()) == [
        "T.name (empty) → LogisticRegression",
        "T.new (unset) → x",
        "T.seed 0 → 1",
        "code of T changed",
        "input data.csv changed",
        "upstream U changed",
        'Dataset.target "Survived" → "Fare"',
        "pandas 3.0 → 3.1",
    ]
    assert reasons.differences(fingerprint(), fingerprint().as_dict()) == ["fingerprint changed"]


def test_an_upstream_task_is_changed_only_when_it_reruns_in_this_plan():
    earlier, now = fingerprint().as_dict(), fingerprint(upstream={"U": "other"})
    reused = TaskPlan("U", [], REUSED, source=f"runs:/{'a' * 32}/U", cached=True)
    assert reasons.differences(now, earlier, {"U": reused}) == [
        f"upstream U reused from run {'a' * 32}, not the earlier run's"
    ]
    deferred = TaskPlan("U", [], DEFERRED)
    assert reasons.differences(now, earlier, {"U": deferred}) == [
        "upstream U left to the sweep's parent"
    ]
    assert reasons.differences(now, earlier, {"U": TaskPlan("U", [], RUN)}) == [
        "upstream U changed"
    ]


def test_fingerprints_cover_inputs_code_and_build_on_reused_sources(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    fingerprints = Fingerprints(tmp_path)
    source, user = FpSource(run_id="x"), FpUser(run_id="x")
    first = fingerprints.of(source)
    assert first.params == {"rows": "3"} and set(first.inputs) == {"data.csv"}
    assert fingerprints.of(user).upstream == {"FpSource": first.digest}
    assert caching.modules_of(FpUser) == caching.modules_of(FpSource)
    assert __name__ in caching.modules_of(FpUser)

    fingerprints.sources["FpSource"] = "recorded-digest"  # reused: what its source recorded
    assert Fingerprints(tmp_path).of(user).upstream == {"FpSource": first.digest}
    rebuilt = Fingerprints(tmp_path)
    rebuilt.sources["FpSource"] = "recorded-digest"
    assert rebuilt.of(user).upstream == {"FpSource": "recorded-digest"}


def test_one_byte_of_input_changes_the_fingerprint(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    before = Fingerprints(tmp_path).of(FpSource(run_id="x")).digest
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("a\n2\n")
    assert Fingerprints(other).of(FpSource(run_id="x")).digest != before


def finished_run(client, experiment_id: str, family: str, digest: str, recorded=None) -> str:
    """A run holding complete outputs of `family`, as a finished task leaves them."""
    run_id = client.create_run(experiment_id).info.run_id
    client.set_tag(run_id, FINGERPRINT_TAG.format(family), digest)
    folder = Path(client.get_run(run_id).info.artifact_uri) / family
    folder.mkdir(parents=True)
    recorded = recorded or {"digest": digest}
    complete_outputs(
        client, run_id, folder, {"task": family, "fingerprint": recorded, "outputs": {}}
    )
    return run_id


@pytest.fixture
def experiments(client, tmp_path) -> list[str]:
    client.create_experiment("a", artifact_location=str(tmp_path / "a"))
    client.create_experiment("b", artifact_location=str(tmp_path / "b"))
    return caching.searchable_experiments(client)


def test_the_newest_complete_outputs_are_found_in_any_experiment(client, tmp_path, experiments):
    older = finished_run(client, experiments[0], "T", "d1")
    newer = finished_run(client, experiments[1], "T", "d1")
    finished_run(client, experiments[0], "T", "d2")
    assert caching.find_reusable(client, experiments, "T", "d1").run_id == newer
    client.delete_run(newer)
    assert caching.find_reusable(client, experiments, "T", "d1").run_id == older
    assert caching.find_reusable(client, experiments, "T", "d3").run_id is None


def test_outputs_gone_from_the_store_are_not_found(client, tmp_path, experiments):
    run_id = finished_run(client, experiments[0], "T", "d1")
    (Path(client.get_run(run_id).info.artifact_uri) / "T" / MANIFEST).unlink()
    assert caching.find_reusable(client, experiments, "T", "d1").run_id is None


def test_why_run_compares_with_the_newest_earlier_run_of_the_same_experiment(client, experiments):
    home, other = (client.get_experiment_by_name(n).experiment_id for n in ("a", "b"))
    assert reasons.why_run(client, experiments, home, fingerprint()) == "no earlier run"
    mine = fingerprint(code="old code").as_dict()
    finished_run(client, home, "T", mine["digest"], mine)
    theirs = fingerprint(params={"seed": "7"}).as_dict()
    newest_elsewhere = finished_run(client, other, "T", theirs["digest"], theirs)
    assert reasons.why_run(client, experiments, home, fingerprint()) == "code of T changed"
    assert reasons.why_run(client, experiments, None, fingerprint()) == (
        f"vs 'b' run {newest_elsewhere[:8]}: T.seed 7 → 0"
    )


def test_tampered_outputs_are_passed_over_and_tagged_never_to_be_offered_again(client, experiments):
    good = finished_run(client, experiments[0], "T", "d1")
    bad = finished_run(client, experiments[1], "T", "d1")
    folder = Path(client.get_run(bad).info.artifact_uri) / "T"
    (folder / "table.json").write_text("{}")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["table.json"] = {"size": 2, "sha256": "0" * 64}  # forged: its digest differs
    (folder / MANIFEST).write_text(json.dumps(manifest))
    lookup = caching.find_reusable(client, experiments, "T", "d1")
    assert lookup.run_id == good
    expected = f"runs:/{bad}/T/_manifest.json differs from what its run recorded"
    assert lookup.rejected == [expected]
    assert "differs" in client.get_run(bad).data.tags["luigiflow.task.T.broken"]
    again = caching.find_reusable(client, experiments, "T", "d1")
    assert again.run_id == good and again.rejected == [expected], "said again, never used"
