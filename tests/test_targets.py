"""The artifact target: outputs count only when the manifest is written, last."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from luigiflow.targets import MANIFEST, ArtifactTarget, TaskFolder, TaskWriter


@pytest.fixture
def run_id(client, tmp_path):
    experiment = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    return client.create_run(experiment).info.run_id


def manifest(**outputs):
    return {"task": "Task", "outputs": outputs}


def test_outputs_are_written_in_place_and_count_after_the_manifest(run_id, tmp_path):
    folder = TaskFolder(run_id, "Task")
    assert folder.folder == tmp_path / "artifacts" / run_id / "artifacts" / "Task"
    writer = TaskWriter(folder)
    writer.begin()
    writer.path("a.csv").write_text("x\n1\n")
    target = ArtifactTarget(TaskFolder(run_id, "Task"), "a.csv")
    assert not target.exists(), "a file without the manifest is not an output"
    writer.commit(manifest(a="a.csv"))
    assert target.exists()
    assert target.local_path().read_text() == "x\n1\n"
    assert json.loads((folder.folder / MANIFEST).read_text())["outputs"] == {"a": "a.csv"}


def test_commit_refuses_missing_outputs(run_id):
    writer = TaskWriter(TaskFolder(run_id, "Task"))
    writer.begin()
    writer.path("a.csv").write_text("x")
    with pytest.raises(RuntimeError, match=r"without writing b\.csv"):
        writer.commit(manifest(a="a.csv", b="b.csv"))
    assert not ArtifactTarget(TaskFolder(run_id, "Task"), "a.csv").exists()


def test_a_new_attempt_clears_what_an_interrupted_one_left(run_id):
    folder = TaskFolder(run_id, "Task")
    writer = TaskWriter(folder)
    writer.begin()
    writer.path("stale.csv").write_text("half")
    writer.begin()
    assert list(folder.folder.iterdir()) == []


def test_a_target_needs_its_own_file_listed(run_id):
    writer = TaskWriter(TaskFolder(run_id, "Task"))
    writer.begin()
    writer.path("a.csv").write_text("x")
    writer.commit(manifest(a="a.csv"))
    assert not ArtifactTarget(TaskFolder(run_id, "Task"), "other.csv").exists()


def test_remote_store_stages_locally_then_uploads_manifest_last(run_id, tmp_path, monkeypatch):
    """A store that is not local (here forced) is written to staging and uploaded on commit."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    uploaded = []
    real_log_artifact = LocalArtifactRepository.log_artifact

    def recording(self, path, artifact_path=None):
        uploaded.append(f"{artifact_path}/{path.rsplit('/', 1)[-1]}")
        return real_log_artifact(self, path, artifact_path)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", recording)
    remote = TaskFolder(run_id, "Task", None)
    remote.folder = None  # what a run on a tracking server with proxied artifacts looks like
    writer = TaskWriter(remote)
    assert writer.folder == tmp_path / ".luigiflow" / "staging" / run_id / "Task"
    writer.begin()
    writer.path("a.csv").write_text("x")
    (writer.path("model") / "MLmodel").parent.mkdir(exist_ok=True)
    (writer.path("model") / "MLmodel").write_text("flavors: {}")
    assert not remote.has("a.csv")
    writer.commit(manifest(a="a.csv", model="model"))

    assert uploaded[-1] == f"Task/{MANIFEST}", "the manifest goes last"
    assert not writer.folder.exists(), "staging is cleaned up"
    listed = {f.path for f in MlflowClient().list_artifacts(run_id, "Task")}
    assert listed == {"Task/a.csv", "Task/model", f"Task/{MANIFEST}"}
    fresh = TaskFolder(run_id, "Task", None)
    fresh.folder = None
    assert fresh.has("a.csv") and fresh.has("model")
    assert fresh.fetch("a.csv").read_text() == "x"
    assert (fresh.fetch("model") / "MLmodel").read_text() == "flavors: {}"


def test_reuse_source_forms(tmp_path):
    by_uri = TaskFolder.from_source(f"runs:/{'a' * 32}/Trainer")
    assert (by_uri.run_id, by_uri.name) == ("a" * 32, "Trainer")
    local = TaskFolder.from_source(str(tmp_path))
    assert local.folder == tmp_path and local.run_id is None
