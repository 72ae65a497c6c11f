"""luigi.toml and --set: every mistake is caught before a run exists, and names its place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

import luigi
from luigi.configuration import get_config

from luigiflow.config import Config, ConfigError, load_config, parse_override
from luigiflow.runstate import draft
from tasks import Evaluator, Prediction, Preprocessor, Register, Trainer

TASKS = {cls.get_task_family(): cls for cls in (Preprocessor, Trainer, Evaluator, Prediction)}
BASE = """
[RunConfig]
experiment_name = "exp"
task = "Prediction"

[PathConfig]
input = "input"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    return tmp_path


def load(root: Path, extra: str = "", overrides=(), base: str = BASE):
    path = root / "luigi.toml"
    path.write_text(base + extra)
    return load_config(path, root, TASKS, overrides)


def error(root: Path, extra: str = "", overrides=(), base: str = BASE) -> str:
    with pytest.raises(ConfigError) as caught:
        load(root, extra, overrides, base)
    return str(caught.value)


def built(config: Config) -> str:
    """The run id under which tasks are built as the plan builds them, from `config`."""
    return draft(config.task_sections(), config.task, "input")


def test_values_reach_luigi_parameters(root):
    config = load(
        root,
        "[Trainer]\nseed = 7\nestimator_params = { C = 0.5 }\n"
        '[Evaluator]\ncustom_metrics = ["balanced_accuracy"]\n',
    )
    assert config.task == "Prediction"
    assert config.input_dir == (root / "input").resolve()
    trainer = Trainer(run_id=built(config))
    assert trainer.seed == 7
    assert dict(trainer.estimator_params) == {"C": 0.5}
    assert list(Evaluator(run_id=built(config)).custom_metrics) == ["balanced_accuracy"]


def test_overrides_win_and_are_typed(root):
    config = load(
        root,
        "[Trainer]\nseed = 7\n",
        [
            "Trainer.seed=3",
            "Trainer.estimator=sklearn.svm.SVC",
            'Evaluator.custom_metrics=["a", "b"]',
        ],
    )
    trainer = Trainer(run_id=built(config))
    assert (trainer.seed, trainer.estimator) == (3, "sklearn.svm.SVC")
    assert list(Evaluator(run_id=built(config)).custom_metrics) == ["a", "b"]


def test_unknown_key_names_file_section_key_and_the_closest_name(root):
    message = error(root, "[Trainer]\nsead = 1\n")
    assert "luigi.toml [Trainer] sead: unknown key" in message
    assert "Did you mean 'seed'?" in message


def test_unknown_section_suggests_a_task(root):
    message = error(root, "[Trainr]\nseed = 1\n")
    assert "[Trainr]" in message and "unknown section" in message and "'Trainer'" in message


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("seed = 1.5", "expected an integer, got float 1.5"),
        ("seed = true", "expected an integer, got bool True"),
        ('seed = "3"', "expected an integer, got str '3'"),
        ("autolog = 1", "expected true or false, got int 1"),
        ("estimator = 5", "expected a string, got int 5"),
        ("estimator_params = [1]", "expected a table, got list [1]"),
    ],
)
def test_wrong_types_are_errors(root, line, wanted):
    message = error(root, f"[Trainer]\n{line}\n")
    assert f"[Trainer] {line.split()[0]}: {wanted}" in message


def test_override_errors_name_the_command_line(root):
    assert "--set Trainer.seed [Trainer] seed: expected an integer" in error(
        root, overrides=["Trainer.seed=x"]
    )
    assert "--set Trainer.sead" in error(root, overrides=["Trainer.sead=1"])
    assert error(root, overrides=["PathConfig.Trainer=nowhere"]).startswith(
        "--set PathConfig.Trainer [PathConfig] Trainer: folder"
    )
    assert "expected Section.key=value" in error(root, overrides=["seed=1"])


def test_override_values_parse_as_toml_or_fall_back_to_text():
    assert parse_override("A.b=3") == ("A", "b", 3)
    assert parse_override("A.b=true") == ("A", "b", True)
    assert parse_override('A.b=["x"]') == ("A", "b", ["x"])
    assert parse_override("A.b=sklearn.svm.SVC") == ("A", "b", "sklearn.svm.SVC")


def test_task_must_exist(root):
    message = error(root, base=BASE.replace('"Prediction"', '"Predict"'))
    assert "[RunConfig] task: unknown task 'Predict'" in message and "'Prediction'" in message
    assert "no task to build" in error(root, base=BASE.replace('task = "Prediction"\n', ""))


def test_path_config_checks_keys_and_folders(root):
    assert "[PathConfig] Trainr: unknown key" in error(root, base=BASE + 'Trainr = "x"\n')
    assert "input folder" in error(root, base=BASE.replace('"input"', '"missing"'))
    assert "[PathConfig] Trainer: 'runs:/abc/Trainer' is not of the form" in error(
        root, base=BASE + 'Trainer = "runs:/abc/Trainer"\n'
    )
    assert "[PathConfig] Trainer: folder" in error(root, base=BASE + 'Trainer = "nowhere"\n')
    config = load(root, base=BASE + f'Trainer = "runs:/{"a" * 32}/Trainer"\n')
    assert config.reuse == {"Trainer": f"runs:/{'a' * 32}/Trainer"}
    # Reuse is the plan's decision, carried by the run context: never put in Luigi's config.
    assert get_config().get("PathConfig", "Trainer", None) is None


def test_a_toml_syntax_error_names_the_file_line_and_column_and_shows_the_line(root):
    message = error(root, '[Dataset\nid_column = "PassengerId"\n')
    place = BASE.count("\n") + 1  # the broken header is the line after BASE
    assert message.startswith(f"{root / 'luigi.toml'}:{place}:9: not valid TOML: Expected ']'")
    assert message.splitlines()[1:] == ["    [Dataset", "            ^"]
    assert "at the end of the file" in error(root, "[Trainer]\nseed = [1,\n")


def test_a_config_that_is_not_utf8_or_no_file_is_named(root):
    (root / "luigi.toml").write_bytes(BASE.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(root / "luigi.toml", root, TASKS)
    line = BASE.count("\n") + 1
    assert str(caught.value) == f"{root / 'luigi.toml'}:{line}: not UTF-8: save the file as UTF-8"
    with pytest.raises(ConfigError, match="input: a folder, not a config file"):
        load_config(root / "input", root, TASKS)
    assert error(root, overrides=["RunConfig.description=\udcff\udcfe"]) == (
        "--set RunConfig.description: not UTF-8 text"
    )  # bytes of another encoding, as Python hands them over from the command line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("RunConfig.experiment_name=", "[RunConfig] experiment_name: a name of at most 500"),
        (f"RunConfig.experiment_name={'e' * 501}", "experiment_name: a name of at most 500"),
        ('RunConfig.tags={"mlflow.parentRunId"="0123"}',
         "[RunConfig] tags: 'mlflow.parentRunId' is a tag MLflow or the runner sets"),
        ('RunConfig.tags={"luigiflow.task.Trainer.fingerprint"="x:y"}',
         "[RunConfig] tags: 'luigiflow.task.Trainer.fingerprint' is a tag MLflow or the runner"),
        ("PathConfig.input=luigi.toml", "luigi.toml is a file, not a folder"),
    ],
)  # fmt: skip
def test_run_values_mlflow_would_refuse_or_misread_are_refused(root, override, message):
    section_key = override.partition("=")[0]
    assert error(root, overrides=[override]).startswith(f"--set {section_key} ")
    assert message in error(root, overrides=[override])


def test_a_swept_value_is_named_by_sweep_and_a_key_both_set_and_swept_is_refused(root):
    path = root / "luigi.toml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=r"^--sweep Trainer.seed \[Trainer\] seed: expected"):
        load_config(path, root, TASKS, swept=["Trainer.seed=x"])
    with pytest.raises(ConfigError, match=r"^--set Trainer\.seed: is swept too"):
        load_config(path, root, TASKS, ["Trainer.seed=5"], swept=["Trainer.seed=1"])
    assert load_config(path, root, TASKS, swept=["Trainer.seed=1"]).sections["Trainer"] == {
        "seed": 1
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [("{C=}", "Invalid value at character 4"),
     ("{=1}", "Invalid initial character for a key part at character 2"),
     ('["a",', "Invalid value at its end")],
)  # fmt: skip
def test_a_set_value_that_is_broken_toml_names_set(root, value, reason):
    message = error(root, overrides=[f"Trainer.estimator_params={value}"])
    assert message == f"--set Trainer.estimator_params: {value!r} is not a TOML value: {reason}"


def test_only_the_given_file_is_read(root, monkeypatch, tmp_path):
    """Luigi's TOML parser also merges ./luigi.toml; --config other.toml must not inherit it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "luigi.toml").write_text("[Trainer]\nseed = 99\n")
    monkeypatch.chdir(cwd)
    load(root)
    assert Trainer(run_id="x").seed == 0


def test_luigi_sections_stay_available(root):
    load(root, "[worker]\nkeep_alive = true\n")
    assert get_config().get("worker", "keep_alive") == "True"
    assert "[worker] keep_alive" in error(root, "[worker]\nkeep_alive = 3\n")


def test_luigi_keeps_only_its_own_sections_and_tasks_read_theirs_from_the_run_context(root):
    """One channel: a task built outside a run's (or a plan's) context gets its defaults,
    whatever luigi.toml says; Luigi's configuration holds none of the task sections."""
    config = load(root, "[worker]\nkeep_alive = true\n[Trainer]\nseed = 7\n")
    assert set(get_config().data) == {"worker"}
    assert Trainer(run_id="x").seed == 0
    assert Trainer(run_id=built(config)).seed == 7
    assert config.sections["Trainer"] == {"seed": 7}


def test_run_id_is_not_configurable(root):
    assert "[Trainer] run_id: unknown key" in error(root, '[Trainer]\nrun_id = "x"\n')


def test_luigi_param_is_strict_not_lenient():
    """The reason for our own checks: Luigi alone turns 1.5 and True into 1."""
    assert luigi.IntParameter().parse(1.5) == 1


def test_a_sweep_section_is_kept_for_the_sweep_and_never_reaches_luigi(root):
    import luigi.configuration

    config = load(root, '[Sweep]\n"Trainer.seed" = [0, 1]\nselect = "roc_auc"\n')
    assert config.sweep == {"Trainer.seed": [0, 1], "select": "roc_auc"}
    assert not luigi.configuration.get_config().has_section("Sweep")
    assert "Sweep" in error(root, "[Sweeep]\nx = 1\n")  # suggested for a misspelling


def test_a_dataset_section_is_kept_for_the_plan_and_its_keys_are_checked(root):
    import luigi.configuration

    config = load(root, '[Dataset]\nid_column = "PassengerId"\ntarget_column = "Survived"\n')
    assert config.dataset == {"id_column": "PassengerId", "target_column": "Survived"}
    assert not luigi.configuration.get_config().has_section("Dataset")
    message = error(root, '[Dataset]\ntarget_colum = "Survived"\n')
    assert "[Dataset] target_colum: unknown key. Did you mean 'target_column'?" in message


def test_a_column_key_in_a_task_section_says_it_moved_to_the_dataset(root):
    message = error(root, '[Preprocessor]\nnumeric_columns = ["Age"]\n')
    assert "[Preprocessor] numeric_columns: unknown key: it is a [Dataset] key" in message


@pytest.mark.parametrize(
    "extra",
    [
        '[Prediction]\nmodel_uri = "http://u:pw-9911@h/m"\n',
        '[Dataset]\nid_column = "postgresql://u:pw-9911@h/db"\n',
        '[core]\nscheduler_host = "x://u:pw-9911@h"\n',
        '[PathConfig]\nTrainer = "http://u:pw-9911@h/runs"\n',
    ],
)
def test_a_password_inside_a_uri_is_refused_where_tasks_or_luigi_read_it(root, extra):
    """Tasks read their values from the run context and Luigi writes them into task ids: a
    password there could not be masked and still work."""
    message = error(root, extra, base=BASE.replace('[PathConfig]\ninput = "input"\n', ""))
    assert "a password inside a URI" in message and "${DB_PASSWORD}" in message
    assert "pw-9911" not in message


def test_a_password_inside_a_uri_given_with_set_is_refused_naming_the_option(root):
    message = error(root, overrides=["Prediction.model_uri=http://u:pw-9911@h/m"])
    assert message.startswith("--set Prediction.model_uri [Prediction] model_uri: a password")
    assert "pw-9911" not in message


def test_the_run_s_note_and_tags_may_hold_one(root):
    config = load(
        root,
        base=BASE.replace(
            "[RunConfig]", '[RunConfig]\ndescription = "postgresql://u:pw-9911@h/db"'
        ),
    )
    assert config.run["description"] == "postgresql://u:pw-9911@h/db"


def test_the_registered_name_is_the_experiment_s_unless_luigi_toml_names_one(root):
    tasks = {**TASKS, "Register": Register}
    path = root / "luigi.toml"
    path.write_text(BASE)
    config = load_config(path, root, tasks)
    assert Register(run_id=built(config)).model_name == "exp"
    config = load_config(path, root, tasks, ["RunConfig.experiment_name=wine"])
    assert Register(run_id=built(config)).model_name == "wine"
    path.write_text(BASE + '[Register]\nmodel_name = "titanic"\n')
    config = load_config(path, root, tasks, ["RunConfig.experiment_name=wine"])
    assert Register(run_id=built(config)).model_name == "titanic"
    path.write_text(BASE + "[Register]\nmodel_name = 3\n")
    with pytest.raises(ConfigError, match=r"\[Register\] model_name: expected a string, got int"):
        load_config(path, root, tasks)
