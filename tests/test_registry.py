"""The Model Registry helpers: `models:/` URIs, config checks, and what a URI names right now."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from luigiflow import registry, targets
from luigiflow.registry import MODEL_URI, alias_version, describe, name_problems, uri_problems


# models:/ URIs and names, without a store -------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("models:/titanic@champion", {"name": "titanic", "alias": "champion", "version": None}),
        ("models:/titanic/3", {"name": "titanic", "alias": None, "version": "3"}),
        ("models:/my model@prod-2", {"name": "my model", "alias": "prod-2", "version": None}),
    ],
)
def test_model_uri_parts(uri, parts):
    assert MODEL_URI.match(uri).groupdict() == parts


@pytest.mark.parametrize(
    "uri",
    [
        "models:/titanic",
        "models:/titanic/latest",
        "models:/titanic@",
        "models:/@champion",
        "models:/titanic/3/model",
        "models:/titanic@champion/3",
        "models:titanic@champion",
        "runs:/0123/Trainer/model",
        "",
    ],
)
def test_model_uri_rejects(uri):
    assert MODEL_URI.match(uri) is None
    assert uri_problems(model=uri) == {
        "model": f"'{uri}' is not models:/<name>@<alias>, models:/<name>/<version> or "
        "models:/m-<id>"
    }


def test_uri_problems_names_only_the_bad_keys():
    assert uri_problems(a="models:/m@champion", b="models:/m/2", c="m@champion") == {
        "c": "'m@champion' is not models:/<name>@<alias>, models:/<name>/<version> or "
        "models:/m-<id>"
    }
    assert uri_problems() == {}


def test_name_problems():
    problems = name_problems(
        name="titanic model",
        alias="champion_v1.2-b",
        digit="2024",
        dash_first="-champion",
        slash="team/titanic",
        at="m@x",
        empty="",
    )
    assert set(problems) == {"dash_first", "slash", "at", "empty"}
    assert problems["slash"] == (
        "'team/titanic' is not a valid registry name (letters, digits, _ - . and spaces)"
    )


def test_describe_leaves_other_uris_alone_without_asking_the_store(monkeypatch):
    def no_store():
        raise AssertionError("describe asked the store")

    monkeypatch.setattr(registry, "client", no_store)
    assert describe("runs:/0123/Trainer/model") == "runs:/0123/Trainer/model"
    assert describe("/data/model") == "/data/model"


# against a throwaway SQLite store ---------------------------------------------------------------
@pytest.fixture(autouse=True)
def registry_store(settings, monkeypatch) -> None:
    """The registry is the tracking store, as the runner sets it up."""
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", settings.tracking_uri)


def register(client: MlflowClient, tmp_path, name: str, alias: str | None = None):
    """A new version of `name`, its source a folder of its own, from a run of its own."""
    experiment = client.get_experiment_by_name("e") or client.get_experiment(
        client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    )
    run = client.create_run(experiment.experiment_id)
    source = tmp_path / "models" / run.info.run_id
    source.mkdir(parents=True)
    (source / "MLmodel").write_text("flavors: {}\n")
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, str(source), run_id=run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def test_describe_and_alias_version_follow_the_alias(client, tmp_path):
    first = register(client, tmp_path, "m", alias="champion")
    assert targets.client().tracking_uri == client.tracking_uri, "registry reads the test store"
    assert describe("models:/m@champion") == f"m version 1 (run {first.run_id})"
    assert describe("models:/m/1") == f"m version 1 (run {first.run_id})"
    assert alias_version("m", "champion") == 1

    second = register(client, tmp_path, "m", alias="champion")
    assert describe("models:/m@champion") == f"m version 2 (run {second.run_id})"
    assert describe("models:/m/1") == f"m version 1 (run {first.run_id})"
    assert alias_version("m", "champion") == 2


def test_what_is_not_registered(client, tmp_path):
    register(client, tmp_path, "m", alias="champion")
    assert describe("models:/m@challenger") == "not registered"
    assert describe("models:/m/7") == "not registered"
    assert describe("models:/other@champion") == "not registered"
    assert alias_version("m", "challenger") is None
    assert alias_version("other", "champion") is None


# a sweep's promotion rule -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("promotion", "holder_auc", "new_auc", "kept"),
    [
        ({}, 0.9, 0.8, False),  # a plain run: the alias always follows
        ({"metric": "auc", "direction": "higher", "promote": "better"}, 0.9, 0.8, True),
        ({"metric": "auc", "direction": "higher", "promote": "better"}, 0.8, 0.8, True),
        ({"metric": "auc", "direction": "higher", "promote": "better"}, 0.8, 0.9, False),
        ({"metric": "auc", "direction": "lower", "promote": "better"}, 0.8, 0.9, True),
        ({"metric": "auc", "direction": "lower", "promote": "better"}, 0.9, 0.8, False),
        ({"metric": "auc", "direction": "higher", "promote": "always"}, 0.9, 0.8, False),
    ],
)
def test_the_alias_moves_only_to_a_better_model_when_a_sweep_says_so(
    client, tmp_path, promotion, holder_auc, new_auc, kept
):
    holder = register(client, tmp_path, "m", alias="champion")
    new = register(client, tmp_path, "m")
    client.log_metric(holder.run_id, "auc", holder_auc)
    client.log_metric(new.run_id, "auc", new_auc)
    why = registry._alias_kept("m", "champion", new, promotion)
    assert bool(why) is kept
    if kept:
        assert why == f"version 1 has auc {holder_auc:.4g}, this one {new_auc:.4g}"


def test_a_holder_without_the_metric_gives_way(client, tmp_path):
    register(client, tmp_path, "m", alias="champion")
    new = register(client, tmp_path, "m")
    client.log_metric(new.run_id, "auc", 0.5)
    rule = {"metric": "auc", "direction": "higher", "promote": "better"}
    assert registry._alias_kept("m", "champion", new, rule) == ""
    assert registry._alias_kept("m", "nobody-yet", new, rule) == ""
