"""Reading a sweep: the grid from [Sweep] and --sweep, its checks, its children's overrides."""

import pytest

from luigiflow.config import ConfigError, parse_override
from luigiflow.sweep import (
    Sweep,
    describe_axes,
    load,
    overrides,
    parameters,
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

    assert parameters({"Task": Task}) == {"Task": ["seed"]}, "not the run id, not a secret"
