"""End to end: what is reused is verified first, models run no code from the artifact store,
bad input files get clear errors, and secrets stay out of the store and the logs."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    add_secret_parameter,
    artifacts,
    edit_task,
    planned,
    run_runner,
    runner_env,
    runs,
    signal_server,
    start_server,
    store,
)

pytestmark = pytest.mark.slow


def flip_a_byte(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    return data


@pytest.mark.parametrize(
    ("kind", "family", "filename", "force"),
    [
        ("table", "Splitter", "validation.parquet", "Evaluator"),
        ("JSON", "Evaluator", "evaluation.json", "Register"),
        ("model", "Trainer", "model/model.skops", "Evaluator"),
    ],
)
def test_a_flipped_byte_is_caught_the_task_reruns_and_the_source_is_never_offered_again(
    project, first_run, kind, family, filename, force
):
    [first] = runs(project)
    original = flip_a_byte(artifacts(project, first) / family / filename)

    dry = run_runner(project, "--force", force, "--dry-run")
    assert re.search(rf"{family}\s+would run: earlier outputs failed verification", dry.stdout)
    result = run_runner(project, "--force", force)
    assert result.returncode == 0, result.stderr
    line = rf"{family}\s+finished in [\d.]+s\s+earlier outputs failed verification: "
    assert re.search(line, result.stdout), result.stdout
    why = planned(runs(project)[0])[family]["reason"]  # the whole reason; the line is cut
    assert why.startswith("earlier outputs failed verification: ") and filename in why, why
    tags = store(project).get_run(first.info.run_id).data.tags
    assert "differs from its manifest" in tags[f"luigiflow.task.{family}.broken"]

    # Restored, the first run's outputs would verify again, but they are not offered again.
    (artifacts(project, first) / family / filename).write_bytes(original)
    store(project).delete_run(runs(project)[0].info.run_id)
    again = run_runner(project, "--force", force, "--dry-run")
    assert re.search(rf"{family}\s+would run", again.stdout), (kind, again.stdout)


def test_a_tampered_path_config_source_is_refused_naming_the_file(project, first_run):
    [first] = runs(project)
    # A run's folder named as a plain folder would escape its run's digest: refused.
    folder = artifacts(project, first) / "Trainer"
    result = run_runner(project, "--set", f'PathConfig.Trainer="{folder}"')
    assert result.returncode == 2 and "is a run's artifact folder" in result.stderr
    flip_a_byte(artifacts(project, first) / "Trainer/model/model.skops")
    source = f'PathConfig.Trainer="runs:/{first.info.run_id}/Trainer"'
    result = run_runner(project, "--no-cache", "--set", source)
    assert result.returncode == 2
    assert "model/model.skops differs from its manifest" in result.stderr
    assert len(runs(project)) == 1


class Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def forged_trainer_folder(project, first, tmp_path) -> Path:
    """A [PathConfig] folder whose model is a pickle, its manifest's digests forged to match:
    whoever can write a folder can make its files agree with each other."""
    from luigiflow.formats import file_digests

    folder = tmp_path / "Trainer"
    shutil.copytree(artifacts(project, first) / "Trainer", folder)
    (folder / "model/model.pkl").write_bytes(pickle.dumps(Payload(str(tmp_path / "pwned"))))
    mlmodel = (folder / "model/MLmodel").read_text()
    mlmodel = mlmodel.replace("serialization_format: skops", "serialization_format: pickle")
    (folder / "model/MLmodel").write_text(mlmodel.replace("model.skops", "model.pkl"))
    manifest = json.loads((folder / "_manifest.json").read_text())
    manifest["files"] = file_digests(folder)
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_pickled_model_is_never_loaded(project, first_run, tmp_path):
    [first] = runs(project)
    folder = forged_trainer_folder(project, first, tmp_path)
    result = run_runner(project, "--no-cache", "--set", f'PathConfig.Trainer="{folder}"')
    assert result.returncode == 2, "refused before the run"
    assert (
        "serialized as pickle" in result.stderr and "only skops models are loaded" in result.stderr
    )
    assert not (tmp_path / "pwned").exists(), "loading the model ran code"


def test_a_model_needing_an_untrusted_type_is_refused_with_how_to_allow_it(project, tmp_path):
    edit_task(
        project,
        "trainer",
        "        self.save_model(model, example=features.head(5))",
        "        import copy\n"
        "        model.named_steps['estimator'].note = copy.copy  # skops must not trust it\n",
    )
    result = run_runner(project)
    assert result.returncode == 1
    assert "needs types this project does not trust: copy.copy" in result.stderr
    assert "LUIGIFLOW_TRUSTED_TYPES" in result.stderr
    allowed = run_runner(project, env=runner_env(LUIGIFLOW_TRUSTED_TYPES="copy.copy"))
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("PassengerId,Survived,Pclass,Sex,Age,SibSp,Parch\n1,0,3,ma\xefle,22,1,0\n", "line 2"),
        ("", "is empty"),
        ("PassengerId,Survived,Pclass,Sex,Age,SibSp,Parch\n", "has a header but no rows"),
        (
            "PassengerId,Survived,Pclass,Sex,Age,SibSp,Parch\n1,0,3,male,22,1,0\n"
            "2,yes,1,female,38,1,0\n3,,3,female,26,0,0\n4,,3,female,26,0,0\n",
            "column 'Survived': a binary target needs a value on every row; line 4 has no value "
            "(2 such rows)",
        ),
        (
            "PassengerId,Survived,Pclass,Sex,Age,SibSp,Parch\n1,0,3,male,22,1,0\n"
            "2,yes,1,female,38,1,0\n3,1,3,female,26,0,0\n4,1,3,female,26,0,0\n",
            "a binary target takes two values, not 3: '1' (2 rows), '0' (1 row), 'yes' (1 row)",
        ),
        (
            "PassengerId,Survived,Pclass,Sex,Age,SibSp,Parch\n1,1,3,male,22,1,0\n"
            "2,1,1,female,38,1,0\n",
            "column 'Survived': a binary target needs at least two classes; all rows are 1",
        ),
    ],
    ids=["latin-1", "empty", "header only", "missing target", "three values", "one class"],
)
def test_bad_input_files_stop_before_the_run_naming_the_file(project, content, message):
    (project / "input/train.csv").write_bytes(content.encode("latin-1"))
    result = run_runner(project)
    assert result.returncode == 2
    assert "train.csv" in result.stderr and message in result.stderr
    assert runs(project) == []


def test_too_few_rows_to_split_fail_the_run_and_cache_nothing_of_the_split(project):
    lines = (project / "input/train.csv").read_text().splitlines()
    (project / "input/train.csv").write_text("\n".join(lines[:4]) + "\n")
    result = run_runner(project)
    assert result.returncode == 1
    assert "too few to hold out 0.2 for validation" in result.stderr
    [run] = runs(project)
    assert run.info.status == "FAILED"
    assert not (artifacts(project, run) / "Splitter/_manifest.json").exists()


def test_a_secret_parameter_never_reaches_the_store_or_the_logs(project):
    value = "tok-9f8e7d6c5b4a"
    add_secret_parameter(project, "TEST_SECRET_TOKEN")
    edit_task(
        project,
        "splitter",
        '        table = self.load("train")',
        f"        raise ValueError('the service refused {value}')",
    )
    result = run_runner(project, "-v", env=runner_env(TEST_SECRET_TOKEN=value))
    assert result.returncode == 1
    assert "the service refused ***" in result.stderr
    assert value not in result.stdout + result.stderr
    with sqlite3.connect(project / "mlflow.db") as db:
        dump = "\n".join(db.iterdump())
    assert "${TEST_SECRET_TOKEN}" in dump and value not in dump
    for path in [*project.glob("mlartifacts/**/*"), *project.glob(".luigiflow/logs/**/*")]:
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path


def test_a_literal_secret_and_a_password_in_a_uri_reach_no_file_log_or_terminal(project):
    """Every channel: Luigi's own log lines (its task ids turn dashes into underscores), the
    `-v` output, the run context, the task records, params, tags, cards and the report."""
    token, password, tagged = "lit-Tok-7319-zq", "Pw-8842-hunter", "Tag-5521-secret"
    add_secret_parameter(project, literal=token)
    digest = hashlib.sha256(token.encode()).hexdigest()
    edit_task(
        project,
        "preprocessor",
        '        self.save("train", self.typed(self.load("train.csv")))',
        "        import hashlib\n"
        f"        assert hashlib.sha256(self.api_token.encode()).hexdigest() == {digest!r}",
    )
    config = project / "luigi.toml"
    run_config = (
        f'description = "x postgresql://u:{password}@h/db"\n'
        f'tags = {{ deploy_token = "{tagged}", owner = "me" }}'
    )
    config.write_text(re.sub(r"(?m)^description = .*$", run_config, config.read_text()))

    result = run_runner(project, "-v", "--workers", "2")

    assert result.returncode == 0, result.stderr
    [run] = runs(project)
    assert run.data.tags["mlflow.note.content"] == "x postgresql://u:***@h/db"
    assert run.data.tags["deploy_token"] == "***" and run.data.tags["owner"] == "me"
    with sqlite3.connect(project / "mlflow.db") as db:
        dump = "\n".join(db.iterdump())
    forms = [
        form for value in (token, password, tagged) for form in (value, re.sub(r"\W", "_", value))
    ]
    found = [form for form in forms if form in result.stdout + result.stderr]
    found += [f"{form} in mlflow.db" for form in forms if form in dump]
    for path in project.rglob("*"):
        if path.is_file() and path != config:  # the user's own config holds them
            found += [f"{form} in {path}" for form in forms if form.encode() in path.read_bytes()]
    assert not found, "\n".join(found)


def test_a_flipped_byte_is_caught_through_a_tracking_server(project, tmp_path):
    from mlflow import MlflowClient

    server, url = start_server(tmp_path)
    env = runner_env(MLFLOW_TRACKING_URI=url)
    try:
        assert run_runner(project, env=env).returncode == 0
        [stored] = list((tmp_path / "artifacts").rglob("Trainer/model/model.skops"))
        flip_a_byte(stored)
        result = run_runner(project, "--force", "Evaluator", env=env)
        client = MlflowClient(url)
        [newest] = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], max_results=1
        )
        why = planned(newest, client)["Trainer"]["reason"]
    finally:
        signal_server(server, signal.SIGKILL)
        server.wait()
    assert result.returncode == 0, result.stderr
    line = r"Trainer\s+finished in [\d.]+s\s+earlier outputs failed verification: "
    assert re.search(line, result.stdout), result.stdout
    assert "model.skops" in why, why
