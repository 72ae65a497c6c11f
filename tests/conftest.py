"""Shared fixtures: a throwaway copy of the project, and a runner to start in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KAGGLE = REPO.parent / "shared" / "data" / "titanic"
sys.path.insert(0, str(REPO / "src"))


def copy_project(destination: Path) -> Path:
    """The files a user clones (no store, no venv), in a folder of its own."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("src", "input"):
        shutil.copytree(
            REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in (".env", "luigi.toml"):
        shutil.copy(REPO / name, destination / name)
    return destination


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def runner_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "LUIGI", "PROJECT_ROOT"))
    }
    env.update(extra)
    return env


def run_runner(
    project: Path, *args: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python src/runner.py ARGS` in `project`, as a user starts it."""
    return subprocess.run(
        [sys.executable, "src/runner.py", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or runner_env(),
    )


def start_runner(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "src/runner.py", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or runner_env(),
    )


def store(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def runs(project: Path) -> list:
    """Every run in the project's store, newest first (none when no store was created)."""
    if not (project / "mlflow.db").exists():
        return []
    client = store(project)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return (
        client.search_runs(experiments, order_by=["attributes.start_time DESC"])
        if experiments
        else []
    )
