"""The command line: options that go together, and values checked before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from luigiflow.cli import parse_args

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("flag", ["--from-run", "--resume", "--join"])
@pytest.mark.parametrize("value", ["", "  ", "../other", "0123"])
def test_a_run_id_must_look_like_one(flag, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args([flag, value])
    assert stopped.value.code == 2
    assert "is not a run id (32 hexadecimal digits)" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--from-run", "--resume", "--join"])
def test_a_run_id_is_taken_as_given(flag):
    args = parse_args([flag, RUN_ID, "--profile", "shared"])
    assert getattr(args, flag[2:].replace("-", "_")) == RUN_ID
    assert args.profile == "shared"


def test_join_resume_from_run_and_config_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--join", RUN_ID, "--config", "other.toml"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_sweep_options_are_kept_in_order():
    args = parse_args(["--sweep", "Trainer.seed=0,1", "--sweep", "Trainer.estimator=a,b"])
    assert args.sweeps == ["Trainer.seed=0,1", "Trainer.estimator=a,b"]


def test_a_python_without_the_project_s_dependencies_is_told_how_to_run_it():
    # -S: no site-packages, as a system Python outside the project's .venv has none of them
    bare = subprocess.run(
        [sys.executable, "-S", "src/runner.py"], cwd=REPO, capture_output=True, text=True
    )
    assert bare.returncode == 2
    assert bare.stdout == "" and len(bare.stderr.splitlines()) == 1, bare.stderr
    assert "lacks luigi, mlflow" in bare.stderr and "make run" in bare.stderr
