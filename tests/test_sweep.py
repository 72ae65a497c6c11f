"""Reading a sweep: the grid from [Sweep] and --sweep, its checks, its children's overrides."""

import pytest

from luigiflow import sweep
from luigiflow.cli import _sweepable
from luigiflow.config import ConfigError, parse_override
from luigiflow.sweep import (
    Sweep,
    describe_axes,
    load,
    overrides,
    parse_option,
    split_values,
)

PARAMETERS = {"Trainer": ["seed", "estimator", "estimator_params"], "Splitter": ["seed"]}


def test_values_split_on_top_level_commas_only():
    raw = '0,1,{C=1,max_iter=9},"a,b",[1,2]'
    assert split_values(raw) == ["0", "1", "{C=1,max_iter=9}", '"a,b"', "[1,2]"]


def test_an_option_reads_each_value_as_toml_or_as_a_plain_string():
    key, values = parse_option("Trainer.estimator_params={C=1,max_iter=9},{C=2}")
    assert key == ("Trainer", "estimator_params")
    assert values == [{"C": 1, "max_iter": 9}, {"C": 2}]
    assert parse_option("Trainer.estimator=sklearn.svm.SVC")[1] == ["sklearn.svm.SVC"]


def test_the_grid_is_every_combination_and_options_replace_the_file():
    sweep = load(
        {"Trainer.seed": [0, 1], "Splitter.seed": [5], "select": "roc_auc"},
        ["Trainer.seed=0,1,2", "Trainer.estimator=a,b"],
        "luigi.toml",
        PARAMETERS,
    )
    grid = sweep.combinations()
    assert len(grid) == 3 * 1 * 2
    assert grid[1] == {
        ("Trainer", "seed"): 0,
        ("Splitter", "seed"): 5,
        ("Trainer", "estimator"): "b",
    }
    assert sweep.select == "roc_auc" and sweep.direction == "higher"


def test_a_child_s_overrides_read_back_to_its_values():
    child = {("Trainer", "estimator_params"): {"C": 1, "max_iter": 9}, ("Trainer", "seed"): 2}
    assert [parse_override(text) for text in overrides(child)] == [
        ("Trainer", "estimator_params", {"C": 1, "max_iter": 9}),
        ("Trainer", "seed", 2),
    ]


def test_no_sweep_is_falsy():
    assert not load({}, [], "luigi.toml", PARAMETERS) and not Sweep()


@pytest.mark.parametrize(
    ("written", "options", "message"),
    [
        ({"Trainr.seed": [0, 1]}, [], "unknown task. Did you mean 'Trainer'?"),
        ({"Trainer.sed": [0, 1]}, [], "unknown key. Did you mean 'seed'?"),
        ({"Trainer.seed": []}, [], "no values to sweep"),
        ({"Trainer.seed": 3}, [], "expected a list of values"),
        ({"Trainer.seed": [1, 1]}, [], "a value is repeated"),
        ({"seed": [1, 2]}, [], 'expected "Task.key"'),
        ({"direction": "up"}, [], 'expected "higher" or "lower"'),
        ({"promote": "never"}, [], 'expected "better" or "always"'),
        ({}, ["Trainer.seed="], "expected Section.key=value,value"),
        ({}, ["seed=1,2"], "expected Section.key=value,value"),
        ({}, ["Trainer.seed=1,2", "Trainer.seed=3,4"], "--sweep Trainer.seed: given twice"),
    ],
)
def test_a_bad_sweep_names_the_key(written, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load(written, options, "luigi.toml", PARAMETERS)


def test_the_grid_in_words_and_the_parameters_a_sweep_may_vary():
    grid = Sweep({("Trainer", "seed"): [0, 1], ("Trainer", "estimator"): ["a.B"]})
    assert describe_axes(grid) == 'Trainer.seed in 0, 1; Trainer.estimator in "a.B"'

    class Task:
        @staticmethod
        def get_params():
            return [("run_id", None), ("seed", None), ("api_token", None)]

    assert _sweepable({"Task": Task}) == {"Task": ["seed"]}, "not the run id, not a secret"


# the comparison of the children
def test_the_winners_are_the_best_finished_child_and_the_best_validated_one():
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "child": 1,
                "run_id": "a",
                "status": "FINISHED",
                "validation": "VALIDATED",
                "auc": 0.8,
            },
            {"child": 2, "run_id": "b", "status": "FINISHED", "validation": "REJECTED", "auc": 0.9},
            {"child": 3, "run_id": "c", "status": "FAILED", "validation": "", "auc": 0.95},
            {
                "child": 4,
                "run_id": "d",
                "status": "FINISHED",
                "validation": "VALIDATED",
                "auc": 0.8,
            },
        ]
    )
    best, validated = sweep.winners(table, Sweep({("T", "k"): [1]}, select="auc"))
    assert (best["run_id"], validated["run_id"]) == ("b", "a"), "failed children never win"
    best, validated = sweep.winners(
        table, Sweep({("T", "k"): [1]}, select="auc", direction="lower")
    )
    assert (best["run_id"], validated["run_id"]) == ("a", "a"), "a tie goes to the first child"
    assert sweep.winners(table[table["validation"] != "VALIDATED"], Sweep(select="auc"))[1] is None
    assert sweep.winners(table, Sweep(select="f1")) == (None, None)


@pytest.mark.usefixtures("settings")
def test_a_child_never_started_and_values_of_mixed_types_are_compared_and_plotted(client, tmp_path):
    """Interrupted while the children were created, a sweep still compares those it has; a
    value of 1 and one of 0.1 are told apart on the plot although the table holds 1.0."""
    from luigiflow.sweep_run import Child

    experiment = client.create_experiment("s", artifact_location=str(tmp_path / "artifacts"))
    parent, first = client.create_run(experiment), client.create_run(experiment)
    client.log_metric(first.info.run_id, "auc", 0.7)
    client.set_tag(first.info.run_id, "luigiflow.validation", "VALIDATED")
    grid = Sweep({("Trainer", "alpha"): [1, 0.1]}, select="auc")
    children = [
        Child(1, {("Trainer", "alpha"): 1}, None, None, first.info.run_id, status="FINISHED"),
        Child(2, {("Trainer", "alpha"): 0.1}, None, None, status="KILLED"),
    ]
    table = sweep.table(client, grid, children)
    assert table[["child", "status", "validation"]].to_dict("records") == [
        {"child": 1, "status": "FINISHED", "validation": "VALIDATED"},
        {"child": 2, "status": "KILLED", "validation": ""},
    ]
    assert table["auc"].iloc[0] == 0.7
    [(title, png)] = sweep.plot(client, parent.info.run_id, grid, table, children)
    assert title == "auc_by_Trainer.alpha" and png.startswith(b"\x89PNG")
    logged = tmp_path / "artifacts" / parent.info.run_id / "artifacts" / "sweep"
    assert (logged / "auc_by_Trainer.alpha.png").is_file()
