"""The plan: every check before a run exists, fingerprints, and what runs, is reused or skipped."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import complete_outputs

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

import luigi
from luigi.configuration import LuigiTomlParser, get_config

from luigiflow.config import ConfigError, load_config
from luigiflow.models import ModelSchema
from luigiflow.names import FINGERPRINT_TAG
from luigiflow.plan import CacheOptions, SweepChild, make_plan
from luigiflow.runstate import COPIED, DEFERRED, REUSED, RUN, SHARED, SKIPPED, RunContext, find
from luigiflow.task import InputFile, PipelineTask, RegisteredModel, requires

# The project modules a task defined here imports: this file imports conftest, which imports
# the fork server the tests start runners from.
CONFTEST_MODULES = ("conftest", "forkserver")

# Task families start with `Pl`: Luigi registers every task class by name, for the session.


class PlSource(PipelineTask):
    outputs = {"rows": "rows.json"}
    n = luigi.IntParameter(default=3)
    columns = luigi.ListParameter(default=["id"])
    options = luigi.DictParameter(default={"mode": "fast"})

    def input_files(self):
        return {"data": InputFile("data.csv", ("id",))}

    def validate(self):
        return {"n": f"must be at least 0, got {self.n}"} if self.n < 0 else {}

    def run(self):
        self.save("rows", self.load("data").to_dict("records"))


@requires(PlSource)
class PlMiddle(PipelineTask):
    outputs = {"model": "model.json"}
    rate = luigi.FloatParameter(default=0.5)

    def run(self):
        self.save("model", {"rows": len(self.load("rows"))})


@requires(PlMiddle)
class PlTop(PipelineTask):
    outputs = {"scores": "scores.json"}

    def run(self):
        self.save("scores", self.load("model"))


class PlX1(PipelineTask):
    outputs = {"x": "x.json"}


class PlX2(PipelineTask):
    outputs = {"x": "x.json"}


@requires(PlX1, PlX2)
class PlAmbiguous(PipelineTask):
    outputs = {"y": "y.json"}

    def run(self):
        self.save("y", self.load("x"))


@requires(PlX1, PlX2)
class PlQualified(PipelineTask):
    outputs = {"y": "y.json"}

    def run(self):
        self.save("y", [self.load("x", of=PlX1), self.load("x", of=PlX2)])


@requires(PlMiddle)
class PlPublish(PipelineTask):
    outputs = {"published": "published.json"}
    publishes = True


@requires(PlMiddle, PlPublish)
class PlAfter(PipelineTask):
    outputs = {"done": "done.json"}


class PlDsn(PipelineTask):
    outputs = {"rows": "rows.json"}
    dsn = luigi.Parameter(default="postgresql://u:pw-4417@h/db")


@requires(PlMiddle)
class PlRegister(PipelineTask):
    """Registers a model, as the template's Register does."""

    outputs = {"registration": "registration.json"}
    publishes = True
    model_name = luigi.Parameter(default="m")
    replace_schema = luigi.BoolParameter(default=False, significant=False)

    def registers(self):
        return RegisteredModel(self.model_name, "champion", self.task_family, self.replace_schema)


TASKS = {
    cls.get_task_family(): cls
    for cls in (
        PlSource, PlMiddle, PlTop, PlX1, PlX2, PlAmbiguous, PlQualified, PlPublish, PlAfter,
        PlDsn, PlRegister,
    )
}  # fmt: skip
CHAIN = ["PlSource", "PlMiddle", "PlTop"]


@pytest.fixture(autouse=True)
def store_and_luigi_config(settings, monkeypatch):
    """A fresh store per test; the Luigi config a test installs is undone after it."""
    parser = get_config("toml")
    monkeypatch.setattr(parser, "data", parser.data)
    monkeypatch.setattr(LuigiTomlParser, "_config_paths", LuigiTomlParser._config_paths)


def load(root: Path, extra: str = "", task: str | None = None, overrides=(), header="id,v"):
    """Write a project (luigi.toml and input/data.csv) under `root` and load its config."""
    (root / "input").mkdir(exist_ok=True)
    (root / "input" / "data.csv").write_text(f"{header}\n1,2\n3,4\n")
    path = root / "luigi.toml"
    run_config = '[RunConfig]\ntask = "PlTop"\nexperiment_name = "earlier"\n'
    path.write_text(f'{run_config}\n[PathConfig]\ninput = "input"\n{extra}')
    return load_config(path, root, TASKS, overrides, task)


def plan_error(settings, *args, options: CacheOptions | None = None, **kwargs) -> str:
    config = load(settings.project_root, *args, **kwargs)
    with pytest.raises(ConfigError) as caught:
        make_plan(TASKS[config.task], config, settings, options or CacheOptions())
    return str(caught.value)


def earlier_run(client, settings, families_and_fingerprints: dict[str, dict]) -> str:
    """A finished run made by hand, as a runner leaves it: per task a fingerprint tag and a
    complete output folder whose manifest says what it was made from (the run's own upstream
    folders)."""
    experiment = client.get_experiment_by_name("earlier")
    run = client.create_run(
        experiment.experiment_id
        if experiment
        else client.create_experiment("earlier", str(settings.project_root / "artifacts"))
    )
    run_id, root = run.info.run_id, Path(run.info.artifact_uri)
    for family, fingerprint in families_and_fingerprints.items():
        client.set_tag(run_id, FINGERPRINT_TAG.format(family), fingerprint["digest"])
        folder = root / family
        folder.mkdir(parents=True)
        outputs = dict(TASKS[family].outputs)
        for filename in outputs.values():
            (folder / filename).write_text(json.dumps({"from": "earlier"}))
        upstream = {dep: f"runs:/{run_id}/{dep}" for dep in fingerprint.get("upstream", {})}
        manifest = {
            "task": family,
            "outputs": outputs,
            "fingerprint": fingerprint,
            "upstream": upstream,
        }
        complete_outputs(client, run_id, folder, manifest)
    return run_id


# a fresh store ---------------------------------------------------------------------------------


def test_a_fresh_store_plans_every_task_to_run(settings, client):
    config = load(settings.project_root, "[PlSource]\nn = 5\n")
    plan = make_plan(PlTop, config, settings)
    context = plan.context
    assert context.root == plan.root == "PlTop"
    assert context.input == "input"
    assert list(context.tasks) == CHAIN, "upstream first"
    assert [t.task_family for t in plan.tasks] == CHAIN
    (draft_id,) = {t.run_id for t in plan.tasks}  # one draft run, which no store holds
    assert find(draft_id).tasks == {} and find(draft_id).config["PlSource"] == {"n": 5}
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert context.tasks["PlSource"].upstream == []
    assert context.tasks["PlMiddle"].upstream == ["PlSource"]
    assert context.tasks["PlTop"].upstream == ["PlMiddle"]
    for family in CHAIN:
        entry = context.tasks[family]
        assert entry.decision == RUN
        assert entry.reason == "no earlier run"
        assert entry.source is None and not entry.cached
        assert len(entry.digest) == 64
        assert entry.fingerprint["task"] == family
        # the test module is the tasks' code, with the project module it imports (conftest)
        assert set(entry.modules) == {__name__, *CONFTEST_MODULES}
        assert len(entry.modules[__name__]) == 64

    source = context.tasks["PlSource"].fingerprint
    data = (settings.project_root / "input" / "data.csv").read_bytes()
    assert source["inputs"] == {"data.csv": hashlib.sha256(data).hexdigest()}
    assert source["params"]["n"] == "5"
    assert "run_id" not in source["params"]
    assert context.tasks["PlMiddle"].fingerprint["upstream"] == {
        "PlSource": context.tasks["PlSource"].digest
    }
    assert context.tasks["PlTop"].fingerprint["upstream"] == {
        "PlMiddle": context.tasks["PlMiddle"].digest
    }
    assert len({context.tasks[f].digest for f in CHAIN}) == 3


def test_the_same_config_plans_the_same_fingerprints_and_a_change_moves_them(settings):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    again = make_plan(PlTop, load(settings.project_root), settings).context
    assert [again.tasks[f].digest for f in CHAIN] == [first.tasks[f].digest for f in CHAIN]
    changed = make_plan(PlTop, load(settings.project_root, "[PlMiddle]\nrate = 0.7\n"), settings)
    digests = {f: changed.context.tasks[f].digest for f in CHAIN}
    assert digests["PlSource"] == first.tasks["PlSource"].digest
    assert digests["PlMiddle"] != first.tasks["PlMiddle"].digest
    assert digests["PlTop"] != first.tasks["PlTop"].digest, "built on a changed upstream"


def test_an_edited_input_file_changes_the_fingerprint_in_the_same_process(settings):
    """A process that plans twice (a notebook, a service, a test) must see the new input."""
    config = load(settings.project_root)
    first = make_plan(PlTop, config, settings).context
    data = settings.project_root / "input" / "data.csv"
    data.write_text("id,v\n1,2\n3,5\n")
    second = make_plan(PlTop, config, settings).context
    new_digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert second.tasks["PlSource"].fingerprint["inputs"] == {"data.csv": new_digest}
    assert second.tasks["PlTop"].digest != first.tasks["PlTop"].digest


def test_the_resolved_config_carries_native_types(settings):
    config = load(settings.project_root, "[PlSource]\nn = 5\n", overrides=["PlMiddle.rate=0.25"])
    resolved = make_plan(PlTop, config, settings).context.config
    assert resolved["RunConfig"]["task"] == "PlTop"
    assert resolved["PathConfig"] == {"input": "input"}
    source = resolved["PlSource"]
    assert source == {"n": 5, "columns": ["id"], "options": {"mode": "fast"}}
    assert type(source["n"]) is int
    assert type(source["columns"]) is list, "a ListParameter default is a tuple in Luigi"
    assert type(source["options"]) is dict, "a DictParameter is a frozen mapping in Luigi"
    assert resolved["PlMiddle"] == {"rate": 0.25}
    assert type(resolved["PlMiddle"]["rate"]) is float
    assert resolved["PlTop"] == {}
    assert "run_id" not in json.dumps(resolved)
    # and they survive being written with the run
    context = make_plan(PlTop, config, settings).context
    assert RunContext.from_json(context.to_json()).config == resolved


def test_the_run_context_holds_the_run_s_note_and_tags_masked(settings):
    """Only the runner reads them, from its config: the context and the records mask them."""
    config = load(
        settings.project_root,
        overrides=[
            'RunConfig.description="x postgresql://u:pw-4417@h/db"',
            'RunConfig.tags={ deploy_token = "tag-4417", owner = "me" }',
        ],
    )
    resolved = make_plan(PlTop, config, settings).context.config
    assert resolved["RunConfig"]["description"] == "x postgresql://u:***@h/db"
    assert resolved["RunConfig"]["tags"] == {"deploy_token": "***", "owner": "me"}
    assert config.run["description"] == "x postgresql://u:pw-4417@h/db", "the note has it"


# problems found before the run --------------------------------------------------------------


def test_a_default_with_a_password_inside_a_uri_is_refused(settings):
    message = plan_error(settings, task="PlDsn")
    assert message.startswith("the default of PlDsn.dsn in the code: a password inside a URI")
    assert "pw-4417" not in message


def test_force_of_a_task_outside_the_pipeline_is_a_config_error(settings):
    message = plan_error(settings, options=CacheOptions(force=frozenset({"PlTopp"})))
    assert message.startswith("--force: PlTopp is not part of this pipeline")
    assert "Did you mean 'PlTop'?" in message
    message = plan_error(settings, options=CacheOptions(force=frozenset({"PlX1"})))
    assert "PlX1 is not part of this pipeline" in message


def test_a_missing_input_column_names_the_file_and_the_column(settings):
    message = plan_error(settings, header="name,value")
    data = settings.project_root / "input" / "data.csv"
    assert f"{data} has no column 'id'" in message
    assert "[PlSource] columns" in message, "the parameter that names the column"
    assert "Valid names: name, value." in message
    assert message.startswith(str(settings.project_root / "luigi.toml"))


def test_a_missing_input_file_is_a_config_error(settings):
    config = load(settings.project_root)
    (settings.project_root / "input" / "data.csv").unlink()
    with pytest.raises(ConfigError, match=r"\[PathConfig\] input: data.csv not found in"):
        make_plan(PlTop, config, settings)


def test_validate_problems_stop_a_task_that_runs(settings):
    message = plan_error(settings, "[PlSource]\nn = -1\n")
    assert "luigi.toml [PlSource] n: must be at least 0, got -1" in message


def test_a_mistake_found_while_planning_names_set_when_set_gave_the_value(settings):
    message = plan_error(settings, overrides=["PlSource.n=-1"])
    assert message.startswith("--set PlSource.n [PlSource] n: must be at least 0"), message
    elsewhere = settings.project_root / "elsewhere"
    elsewhere.mkdir()
    message = plan_error(settings, overrides=[f"PathConfig.PlSource={elsewhere}"])
    assert message.startswith("--set PathConfig.PlSource [PathConfig] PlSource:"), message


def test_an_ambiguous_load_is_refused_at_plan_time(settings):
    message = plan_error(settings, task="PlAmbiguous")
    assert "[PlAmbiguous]" in message
    assert "reads 'x', which PlX1 and PlX2 both make" in message
    assert "of=PlX1" in message


def test_a_qualified_load_of_the_same_name_is_fine(settings):
    config = load(settings.project_root, task="PlQualified")
    plan = make_plan(PlQualified, config, settings)
    assert list(plan.context.tasks) == ["PlX1", "PlX2", "PlQualified"]
    assert plan.context.tasks["PlQualified"].upstream == ["PlX1", "PlX2"]
    assert {e.decision for e in plan.context.tasks.values()} == {RUN}


# reuse ------------------------------------------------------------------------------------


def test_a_task_found_by_fingerprint_is_reused_and_what_only_it_needed_skipped(settings, client):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    middle, source = first.tasks["PlMiddle"].fingerprint, first.tasks["PlSource"].fingerprint
    old = earlier_run(client, settings, {"PlSource": source, "PlMiddle": middle})

    # PlSource's fingerprint is in the store too, but PlMiddle covers it: it is not needed.
    context = make_plan(PlTop, load(settings.project_root), settings).context
    reused = context.tasks["PlMiddle"]
    assert reused.decision == REUSED and reused.cached
    assert reused.source == f"runs:/{old}/PlMiddle"
    assert reused.fingerprint == middle
    assert set(reused.modules) == {__name__, *CONFTEST_MODULES}
    assert reused.reason == ""

    skipped = context.tasks["PlSource"]
    assert skipped.decision == SKIPPED
    assert skipped.source == f"runs:/{old}/PlSource", "taken from PlMiddle's manifest"
    assert skipped.fingerprint == source, "as its own manifest recorded"
    assert skipped.modules == {}

    top = context.tasks["PlTop"]
    assert top.decision == RUN and top.reason == "no earlier run"
    assert top.digest == first.tasks["PlTop"].digest
    assert context.folder("PlMiddle", "f" * 32).run_id == old
    assert context.folder("PlSource", "f" * 32).run_id == old


def test_a_changed_parameter_says_why_the_task_runs(settings, client):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    earlier_run(client, settings, {"PlMiddle": first.tasks["PlMiddle"].fingerprint})
    context = make_plan(PlTop, load(settings.project_root, "[PlMiddle]\nrate = 0.7\n"), settings)
    entries = context.context.tasks
    assert entries["PlMiddle"].decision == RUN
    assert entries["PlMiddle"].reason == "PlMiddle.rate 0.5 → 0.7"
    assert entries["PlSource"].decision == RUN, "needed by a task that runs"


def test_an_upstream_task_reused_from_an_older_run_is_not_called_changed(settings, client):
    """The newest PlTop was built on another PlMiddle; this plan reuses an older one."""
    first = make_plan(PlTop, load(settings.project_root), settings).context
    older = earlier_run(client, settings, {f: first.tasks[f].fingerprint for f in TASKS_BELOW})
    other = make_plan(PlTop, load(settings.project_root, "[PlMiddle]\nrate = 0.7\n"), settings)
    earlier_run(client, settings, {f: e.fingerprint for f, e in other.context.tasks.items()})
    entries = make_plan(PlTop, load(settings.project_root), settings).context.tasks
    assert entries["PlMiddle"].source == f"runs:/{older}/PlMiddle"
    assert (
        entries["PlTop"].reason
        == f"upstream PlMiddle reused from run {older}, not the earlier run's"
    )


TASKS_BELOW = ("PlSource", "PlMiddle")


def test_force_reruns_a_task_and_its_downstream_and_reuses_below(settings, client):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    old = earlier_run(
        client, settings, {f: first.tasks[f].fingerprint for f in ("PlSource", "PlMiddle")}
    )
    options = CacheOptions(force=frozenset({"PlMiddle"}))
    context = make_plan(PlTop, load(settings.project_root), settings, options).context
    assert context.tasks["PlTop"].reason == "forced (--force)"
    assert context.tasks["PlMiddle"].reason == "forced (--force)"
    assert context.tasks["PlSource"].decision == REUSED
    assert context.tasks["PlSource"].source == f"runs:/{old}/PlSource"


def test_copy_turns_reuse_into_a_copy_and_no_cache_runs_everything(settings, client):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    old = earlier_run(client, settings, {"PlMiddle": first.tasks["PlMiddle"].fingerprint})
    copied = make_plan(PlTop, load(settings.project_root), settings, CacheOptions(copy=True))
    entry = copied.context.tasks["PlMiddle"]
    assert (entry.decision, entry.source, entry.cached) == (COPIED, f"runs:/{old}/PlMiddle", True)
    assert copied.context.tasks["PlSource"].decision == SKIPPED

    fresh = make_plan(PlTop, load(settings.project_root), settings, CacheOptions(enabled=False))
    for family in CHAIN:
        assert fresh.context.tasks[family].decision == RUN
        assert fresh.context.tasks[family].reason == "cache disabled (--no-cache)"


def write_kept_outputs(root: Path, family: str, fingerprint: dict, upstream: dict) -> Path:
    folder = root / "kept" / family
    folder.mkdir(parents=True)
    outputs = dict(TASKS[family].outputs)
    for filename in outputs.values():
        (folder / filename).write_text("{}")
    manifest = {"task": family, "outputs": outputs, "fingerprint": fingerprint}
    complete_outputs(None, None, folder, {**manifest, "upstream": upstream})
    return folder


def test_validate_is_not_asked_of_a_task_that_does_not_run(settings):
    first = make_plan(PlTop, load(settings.project_root), settings).context
    kept_source = settings.project_root / "kept" / "PlSource"
    write_kept_outputs(
        settings.project_root,
        "PlMiddle",
        first.tasks["PlMiddle"].fingerprint,
        {"PlSource": str(kept_source)},
    )
    # extra lines follow [PathConfig]: reuse the kept PlMiddle, and a value validate() refuses
    extra = 'PlMiddle = "kept/PlMiddle"\n[PlSource]\nn = -1\n'

    def config():
        return load(settings.project_root, extra)

    # PlSource's bad value changes what PlMiddle would be made from: the kept outputs differ.
    with pytest.raises(ConfigError, match=r"made with another config or input: upstream PlSource"):
        make_plan(PlTop, config(), settings)
    plan = make_plan(PlTop, config(), settings, CacheOptions(allow_mismatch=True))
    entries = plan.context.tasks
    assert entries["PlMiddle"].decision == REUSED and not entries["PlMiddle"].cached
    assert entries["PlMiddle"].mismatch == "upstream PlSource changed"
    assert entries["PlSource"].decision == SKIPPED, "so its value was never validated"
    assert entries["PlSource"].source == str(kept_source)
    assert entries["PlTop"].decision == RUN


# a sweep's children ----------------------------------------------------------------------------


def test_a_sweep_child_shares_what_an_earlier_child_makes(settings):
    first = make_plan(
        PlTop, load(settings.project_root, "[PlMiddle]\nrate = 0.1\n"), settings,
        child=SweepChild(),
    )  # fmt: skip
    assert {e.decision for e in first.context.tasks.values()} == {RUN}
    maker = "1" * 32
    shared = {
        entry.digest: (f"runs:/{maker}/{family}", "child 1 (PlMiddle.rate=0.1)")
        for family, entry in first.context.tasks.items()
    }
    second = make_plan(
        PlTop, load(settings.project_root, "[PlMiddle]\nrate = 0.2\n"), settings,
        child=SweepChild(shared),
    )  # fmt: skip
    source = second.context.tasks["PlSource"]
    assert (source.decision, source.source) == (SHARED, f"runs:/{maker}/PlSource")
    assert source.reason == "made once for the sweep, by child 1 (PlMiddle.rate=0.1)"
    assert source.digest == first.context.tasks["PlSource"].digest
    assert second.context.made_by("PlSource", "2" * 32) == maker
    assert second.context.folder("PlSource", "2" * 32).run_id == maker
    assert [second.context.tasks[f].decision for f in ("PlMiddle", "PlTop")] == [RUN, RUN]
    assert second.context.made_by("PlMiddle", "2" * 32) == "2" * 32


def test_a_task_that_publishes_is_left_to_the_sweep_and_what_follows_it_is_told_apart(settings):
    config = load(settings.project_root, task="PlAfter")
    plain = make_plan(PlAfter, config, settings)
    child = make_plan(PlAfter, config, settings, child=SweepChild())
    assert plain.context.tasks["PlPublish"].decision == RUN
    publish = child.context.tasks["PlPublish"]
    assert (publish.decision, publish.reason) == (DEFERRED, "left to the sweep, for its winner")
    assert child.context.tasks["PlMiddle"].digest == plain.context.tasks["PlMiddle"].digest
    # A child's PlAfter did not wait for a publication: a plain run must not reuse it.
    assert child.context.tasks["PlAfter"].digest != plain.context.tasks["PlAfter"].digest


# [Dataset] -------------------------------------------------------------------------------------


def test_the_dataset_is_resolved_from_train_csv_and_enters_every_fingerprint(settings):
    root = settings.project_root
    (root / "input").mkdir(exist_ok=True)
    (root / "input" / "train.csv").write_text(
        "Id,Price,Area,Street\n1,10.5,50,Pave\n2,20.25,60,\n3,30.75,70,Grvl\n"
    )
    dataset = '[Dataset]\nid_column = "Id"\ntarget_column = "Price"\n'
    plan = make_plan(PlTop, load(root, dataset), settings)
    assert plan.dataset.problem_type == "regression"
    assert plan.context.config["Dataset"] == {
        "id_column": "Id",
        "target_column": "Price",
        "problem_type": "regression",
        "numeric_columns": ["Area"],
        "categorical_columns": ["Street"],
    }
    assert PlSource(run_id=plan.tasks[0].run_id).dataset.features == ("Area", "Street")
    assert plan.context.tasks["PlSource"].fingerprint["params"]["Dataset.target_column"] == (
        '"Price"'
    )
    other = make_plan(PlTop, load(root, dataset + 'problem_type = "multiclass"\n'), settings)
    for family in CHAIN:
        assert other.context.tasks[family].digest != plan.context.tasks[family].digest
    without = make_plan(PlTop, load(root), settings)
    assert without.dataset is None and "Dataset" not in without.context.config
    assert "Dataset.id_column" not in without.context.tasks["PlSource"].fingerprint["params"]


def test_a_dataset_that_does_not_fit_the_data_is_refused_before_the_run(settings):
    root = settings.project_root
    (root / "input").mkdir(exist_ok=True)
    (root / "input" / "train.csv").write_text("Id,Price\n1,10.5\n2,20.25\n")
    message = plan_error(settings, '[Dataset]\nid_column = "Id"\ntarget_column = "SalePrice"\n')
    assert message.endswith("[Dataset] target_column: train.csv has no column 'SalePrice'")


class PlReadsDataset(PipelineTask):
    outputs = {"x": "x.json"}

    def input_files(self) -> dict[str, InputFile]:
        return {"data": InputFile("data.csv", (self.dataset.id_column,))}


def test_a_task_that_reads_the_dataset_needs_the_section(settings):
    config = load(settings.project_root)
    with pytest.raises(ConfigError) as caught:
        make_plan(PlReadsDataset, config, settings)
    assert str(caught.value).endswith(
        "[Dataset] id_column: required: PlReadsDataset reads the id and target columns from "
        "[Dataset]"
    )


# a registered name holds one kind of model ----------------------------------------------------
HOLDER = ModelSchema({"Pclass": "long", "Sex": "string"}, "binary", "Survived")
OTHER_KIND = (
    "[PlRegister]: models:/m@champion (version 1) is another kind of model than this run "
    "registers: target Survived (this run: label); columns Pclass, Sex not in this run; columns "
    "size, colour new in this run. Moving @champion to this run's model would break whoever "
    "calls models:/m@champion (make serve, batch scoring). Register it under another "
    "[PlRegister] model_name, or set [PlRegister] replace_schema = true to replace the holder "
    "all the same"
)


@pytest.fixture
def registered(settings, client, monkeypatch) -> str:
    """`models:/m@champion`, a Titanic-like model, and a [Dataset] of other data: the config
    of a run that would register that data's model as `m`."""
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", settings.tracking_uri)
    run = client.create_run(client.create_experiment("earlier"))
    client.create_registered_model("m")
    client.create_model_version("m", "/nowhere", run_id=run.info.run_id, tags=HOLDER.tags())
    client.set_registered_model_alias("m", "champion", "1")
    (settings.project_root / "input").mkdir(exist_ok=True)
    (settings.project_root / "input" / "train.csv").write_text(
        "Key,size,colour,label\n1,0.5,red,yes\n2,1.5,blue,no\n3,2.5,red,yes\n"
    )
    return '[Dataset]\nid_column = "Key"\ntarget_column = "label"\n'


def test_a_model_of_another_kind_than_the_registered_one_is_refused_before_the_run(
    settings, registered
):
    message = plan_error(settings, registered, task="PlRegister")
    assert message == f"{settings.project_root / 'luigi.toml'} {OTHER_KIND}"


def test_another_name_or_replace_schema_lets_it_register(settings, registered):
    for extra in ('[PlRegister]\nmodel_name = "labels"\n', "[PlRegister]\nreplace_schema = true\n"):
        config = load(settings.project_root, registered + extra, task="PlRegister")
        plan = make_plan(PlRegister, config, settings)
        assert plan.context.tasks["PlRegister"].decision == RUN
        assert plan.notes == []


def test_a_sweep_s_winner_is_refused_too(settings, registered):
    """Each child defers its registration to the sweep's parent, which plans it again for
    the winner: both plans refuse another kind of model before any run exists."""
    config = load(settings.project_root, registered, task="PlRegister")
    with pytest.raises(ConfigError) as child:
        make_plan(PlRegister, config, settings, child=SweepChild())
    assert str(child.value).endswith(OTHER_KIND)
    winner = CacheOptions(force=frozenset({"PlRegister"}))
    with pytest.raises(ConfigError) as parent:
        make_plan(PlRegister, config, settings, winner)
    assert str(parent.value).endswith(OTHER_KIND)


def test_a_holder_that_cannot_be_compared_is_a_note(settings, registered, client):
    client.create_model_version("m", str(settings.project_root / "nowhere"))  # no MLmodel
    client.set_registered_model_alias("m", "champion", "2")
    plan = make_plan(
        PlRegister, load(settings.project_root, registered, task="PlRegister"), settings
    )
    assert plan.notes == [
        "models:/m@champion (version 2) records no schema and has no readable signature: "
        "not compared"
    ]
