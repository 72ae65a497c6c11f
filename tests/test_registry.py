"""The Model Registry helpers: `models:/` URIs, config checks, and what a URI names right now."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from luigiflow import registry, store
from luigiflow.inputs import Dataset
from luigiflow.models import ModelSchema
from luigiflow.registry import (
    MODEL_URI,
    Comparison,
    SchemaMismatch,
    alias_version,
    compare_with_holder,
    describe,
    name_problems,
    uri_problems,
)
from luigiflow.task import RegisteredModel


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


def register(
    client: MlflowClient,
    tmp_path,
    name: str,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    mlmodel: str = "flavors: {}\n",
    params: dict[str, str] | None = None,
):
    """A new version of `name`, its source a folder of its own, from a run of its own (with
    `params`), its MLmodel file `mlmodel`, tagged `tags`."""
    experiment = client.get_experiment_by_name("e") or client.get_experiment(
        client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    )
    run = client.create_run(experiment.experiment_id)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    source = tmp_path / "models" / run.info.run_id
    source.mkdir(parents=True)
    (source / "MLmodel").write_text(mlmodel)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, str(source), run_id=run.info.run_id, tags=tags or {}
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def test_describe_and_alias_version_follow_the_alias(client, tmp_path):
    first = register(client, tmp_path, "m", alias="champion")
    assert store.client().tracking_uri == client.tracking_uri, "registry reads the test store"
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


# a name holds one kind of model -----------------------------------------------------------------
TITANIC = ModelSchema(
    {"Pclass": "long", "Age": "double", "SibSp": "long", "Parch": "long", "Sex": "string"},
    "binary",
    "Survived",
)
WINE = ModelSchema({"alcohol": "double", "color_intensity": "double"}, "multiclass", "cultivar")
TO_CHAMPION = RegisteredModel("m", "champion", "Register")


def signature_mlmodel(schema: ModelSchema) -> str:
    """An MLmodel file whose signature takes `schema`'s columns, as MLflow writes one."""
    inputs = [
        {"type": kind, "name": name, "required": True} for name, kind in schema.inputs.items()
    ]
    return f"flavors: {{}}\nsignature:\n  inputs: '{json.dumps(inputs)}'\n  outputs: null\n"


def test_a_free_alias_is_compared_with_nothing(client, tmp_path):
    def never():
        raise AssertionError("the schema was worked out with no holder to compare it with")

    assert compare_with_holder("m", "champion", never) == Comparison()
    register(client, tmp_path, "m", tags=TITANIC.tags())  # a version, but not the alias's
    assert compare_with_holder("m", "champion", never) == Comparison()


def test_the_holder_s_recorded_schema_decides(client, tmp_path):
    register(client, tmp_path, "m", alias="champion", tags=TITANIC.tags())
    assert compare_with_holder("m", "champion", TITANIC) == Comparison(
        "models:/m@champion (version 1)"
    )
    comparison = compare_with_holder("m", "champion", lambda: WINE)
    assert comparison.holder == "models:/m@champion (version 1)"
    assert comparison.differences == [
        "problem type binary (this run: multiclass)",
        "target Survived (this run: cultivar)",
        "columns Pclass, Age, SibSp, Parch, Sex not in this run",
        "columns alcohol, color_intensity new in this run",
    ]
    assert registry.refusal(comparison, TO_CHAMPION) == (
        "models:/m@champion (version 1) is another kind of model than this run registers: "
        "problem type binary (this run: multiclass); target Survived (this run: cultivar); "
        "columns Pclass, Age, SibSp, Parch, Sex not in this run; columns alcohol, "
        "color_intensity new in this run. Moving @champion to this run's model would break "
        "whoever calls models:/m@champion (make serve, batch scoring). Register it under "
        "another [Register] model_name, or set [Register] replace_schema = true to replace "
        "the holder all the same"
    )


def test_a_holder_registered_before_schemas_were_recorded_is_compared_through_its_signature(
    client, tmp_path
):
    params = {"Dataset.problem_type": "binary", "Dataset.target_column": "Survived"}
    register(client, tmp_path, "m", "champion", mlmodel=signature_mlmodel(TITANIC), params=params)
    assert compare_with_holder("m", "champion", TITANIC).differences == []
    assert "target Survived (this run: cultivar)" in (
        compare_with_holder("m", "champion", WINE).differences
    )
    # A run that logged no [Dataset]: the columns alone are compared.
    register(client, tmp_path, "m", "champion", mlmodel=signature_mlmodel(TITANIC))
    assert compare_with_holder("m", "champion", WINE).differences == [
        "columns Pclass, Age, SibSp, Parch, Sex not in this run",
        "columns alcohol, color_intensity new in this run",
    ]


def test_a_holder_without_a_readable_signature_is_not_compared_and_says_so(client, tmp_path):
    register(client, tmp_path, "m", alias="champion")  # its MLmodel has no signature
    assert compare_with_holder("m", "champion", WINE) == Comparison(
        "models:/m@champion (version 1)",
        note="models:/m@champion (version 1) records no schema and has no readable signature: "
        "not compared",
    )


def saved_model(tmp_path, schema: ModelSchema):
    """A task as `registry.register` sees it: a model output whose MLmodel has `schema`'s
    signature, trained on a dataset of `schema`'s problem type and target."""
    folder = tmp_path / "Trainer" / schema.target
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "MLmodel").write_text(signature_mlmodel(schema))
    target = SimpleNamespace(folder=SimpleNamespace(fetch=lambda f: folder / f), filename="model")
    dataset = Dataset("Id", schema.target, schema.problem_type, tuple(schema.inputs), ())
    return SimpleNamespace(output=lambda: {"model": target}, dataset=dataset)


def test_registering_refuses_another_kind_of_model_whatever_the_plan_said(client, tmp_path):
    """The plan refused it before the run; the holder may have changed since (another run, by
    hand, a sweep's winner): the saved model's own signature is compared as it registers."""
    register(client, tmp_path, "m", alias="champion", tags=TITANIC.tags())
    with pytest.raises(SchemaMismatch, match=r"models:/m@champion \(version 1\) is another kind"):
        registry._checked_schema_tags(saved_model(tmp_path, WINE), "model", TO_CHAMPION)
    assert (
        registry._checked_schema_tags(saved_model(tmp_path, TITANIC), "model", TO_CHAMPION)
        == TITANIC.tags()
    )

    replacing = RegisteredModel("m", "champion", "Register", replace_schema=True)
    tags = registry._checked_schema_tags(saved_model(tmp_path, WINE), "model", replacing)
    assert ModelSchema.from_tags(tags) == WINE
    assert tags["luigiflow.schema.replaced"].startswith(
        "replace_schema = true; this model replaced models:/m@champion (version 1): problem "
        "type binary (this run: multiclass)"
    )
