"""Settings from `.env`, `.env.local` and the environment, with paths pinned to the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from luigiflow.settings import (
    UI_RECORD,
    Settings,
    UnknownProfile,
    absolute_sqlite_uri,
    find_project_root,
    load_settings,
    ui_address,
)

WRITTEN = (  # load_settings (or the .env files it loads) write these into os.environ
    "PROJECT_ROOT",
    "LUIGI_CONFIG_PATH",
    "LUIGI_CONFIG_PARSER",
    "MLFLOW_TRACKING_URI",
    "LUIGIFLOW_ARTIFACT_ROOT",
    "MLFLOW_DISABLE_TELEMETRY",
    "MPLBACKEND",
    "MLFLOW_SQLALCHEMYSTORE_POOLCLASS",
    "LUIGIFLOW_PROFILE",
    "LUIGIFLOW_SCHEDULER_URL",
    "LUIGIFLOW_UI_URL",
)
OWNER = "LUIGIFLOW_TEST_OWNER"  # a variable only the .env files of these tests set


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    """No variable of the outer environment, and every change undone after the test.

    `delenv` of an unset variable records nothing to undo, so each is set first: the undo then
    removes again what load_settings writes.
    """
    for name in (*WRITTEN, OWNER):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder, with the working directory somewhere else."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    project = tmp_path / "project"
    project.mkdir()
    return project


def write_env(folder: Path, name: str, **values: str) -> None:
    (folder / name).write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def test_defaults_without_any_env_file(project):
    settings = load_settings(project)
    assert settings == Settings(
        project_root=project,
        config_path=project / "luigi.toml",
        tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
        artifact_root=project / "mlartifacts",
    )
    assert settings.embedded_store


def test_the_environment_wins_over_both_files(project, monkeypatch):
    write_env(project, ".env", MLFLOW_TRACKING_URI="sqlite:///env.db", **{OWNER: "env"})
    write_env(project, ".env.local", MLFLOW_TRACKING_URI="sqlite:///local.db", **{OWNER: "local"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv(OWNER, "shell")
    settings = load_settings(project)
    assert settings.tracking_uri == "http://tracking.example:5000"
    assert not settings.embedded_store
    assert os.environ[OWNER] == "shell"


def test_env_local_wins_over_env(project):
    write_env(
        project,
        ".env",
        MLFLOW_TRACKING_URI="sqlite:///env.db",
        LUIGIFLOW_ARTIFACT_ROOT="from-env",
        **{OWNER: "env"},
    )
    write_env(project, ".env.local", MLFLOW_TRACKING_URI="sqlite:///local.db", **{OWNER: "local"})
    settings = load_settings(project)
    assert settings.tracking_uri == f"sqlite:///{project / 'local.db'}"
    assert os.environ[OWNER] == "local"
    assert settings.artifact_root == project / "from-env", ".env still fills in the rest"


def test_relative_paths_are_relative_to_the_project_not_the_working_directory(project):
    write_env(
        project,
        ".env",
        LUIGI_CONFIG_PATH="conf/luigi.toml",
        MLFLOW_TRACKING_URI="sqlite:///store/mlflow.db",
        LUIGIFLOW_ARTIFACT_ROOT="store/artifacts",
    )
    settings = load_settings(project)
    assert Path.cwd() != project
    assert settings.config_path == project / "conf/luigi.toml"
    assert settings.tracking_uri == f"sqlite:///{project / 'store/mlflow.db'}"
    assert settings.artifact_root == project / "store/artifacts"


def test_a_relative_project_root_is_taken_from_the_folder_of_the_env_file(project):
    (project / "sub").mkdir()
    write_env(project, ".env", PROJECT_ROOT="sub", LUIGIFLOW_ARTIFACT_ROOT="art")
    settings = load_settings(project)
    assert settings.project_root == project / "sub"
    assert settings.config_path == project / "sub/luigi.toml"
    assert settings.tracking_uri == f"sqlite:///{project / 'sub/mlflow.db'}"
    assert settings.artifact_root == project / "sub/art"


def test_absolute_paths_are_kept(project, tmp_path):
    elsewhere = tmp_path / "shared"
    write_env(
        project,
        ".env",
        PROJECT_ROOT=str(elsewhere),
        LUIGI_CONFIG_PATH=str(tmp_path / "c.toml"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}",
        LUIGIFLOW_ARTIFACT_ROOT=str(tmp_path / "a"),
    )
    settings = load_settings(project)
    assert settings == Settings(
        elsewhere, tmp_path / "c.toml", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "a"
    )


def test_a_config_option_is_relative_to_the_working_directory(project, tmp_path):
    write_env(project, ".env", LUIGI_CONFIG_PATH="from-env.toml")
    settings = load_settings(project, "mine/luigi.toml")
    assert settings.config_path == tmp_path / "elsewhere/mine/luigi.toml"
    assert load_settings(project, str(project / "x.toml")).config_path == project / "x.toml"


def test_resolved_values_are_written_to_the_environment(project):
    settings = load_settings(project)
    assert {name: os.environ.get(name) for name in WRITTEN} == {
        "PROJECT_ROOT": str(project),
        "LUIGI_CONFIG_PATH": None,  # read (settings.config), never left for Luigi to parse
        "LUIGI_CONFIG_PARSER": "toml",
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "LUIGIFLOW_ARTIFACT_ROOT": str(project / "mlartifacts"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MPLBACKEND": "Agg",
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool",
        "LUIGIFLOW_PROFILE": "local",
        "LUIGIFLOW_SCHEDULER_URL": None,  # none given: a scheduler inside the runner
        "LUIGIFLOW_UI_URL": None,  # read (a .env may set it), never written
    }


def test_defaults_in_the_environment_are_only_filled_in(project, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "QtAgg")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    load_settings(project)
    assert os.environ["MPLBACKEND"] == "QtAgg"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert "MLFLOW_SQLALCHEMYSTORE_POOLCLASS" not in os.environ, "only for SQLite"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "sqlite:///{root}/mlflow.db"),
        ("sqlite:///store/../m.db", "sqlite:///{root}/m.db"),
        ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
        ("http://tracking.example:5000", "http://tracking.example:5000"),
        ("databricks", "databricks"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
    ],
)
def test_absolute_sqlite_uri(tmp_path, uri, expected):
    assert absolute_sqlite_uri(uri, tmp_path) == expected.format(root=tmp_path.resolve())


@pytest.mark.parametrize("marker", [".env", "luigi.toml"])
def test_find_project_root_walks_up_to_a_marker(tmp_path, marker):
    (tmp_path / marker).write_text("")
    deep = tmp_path / "src" / "tasks"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path
    assert find_project_root(tmp_path) == tmp_path


def test_find_project_root_takes_the_nearest_marker(tmp_path):
    (tmp_path / ".env").write_text("")
    inner = tmp_path / "inner"
    (inner / "src").mkdir(parents=True)
    (inner / "luigi.toml").write_text("")
    assert find_project_root(inner / "src") == inner


def test_find_project_root_without_a_marker_is_the_start(tmp_path):
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    (tmp_path / "a" / ".env").mkdir()  # a folder named .env is no marker
    if any((f / ".env").is_file() or (f / "luigi.toml").is_file() for f in tmp_path.parents):
        pytest.skip("a folder above the temporary directory holds a project marker")
    assert find_project_root(start) == start


def test_a_profile_adds_its_env_file_between_env_local_and_env(project, monkeypatch):
    write_env(project, ".env", MLFLOW_TRACKING_URI="sqlite:///env.db", **{OWNER: "env"})
    write_env(
        project,
        ".env.shared",
        MLFLOW_TRACKING_URI="http://stack:5000",
        LUIGIFLOW_SCHEDULER_URL="http://stack:8082/",
        **{OWNER: "shared"},
    )
    write_env(project, ".env.local", **{OWNER: "local"})
    settings = load_settings(project, profile="shared")
    assert (settings.profile, settings.tracking_uri) == ("shared", "http://stack:5000")
    assert settings.scheduler_url == "http://stack:8082"
    assert os.environ[OWNER] == "local", ".env.local wins over the profile's file"
    assert os.environ["LUIGIFLOW_PROFILE"] == "shared", "worker processes see the profile"


def test_the_profile_comes_from_the_environment_and_local_is_the_default(project, monkeypatch):
    write_env(project, ".env.shared", MLFLOW_TRACKING_URI="http://stack:5000")
    assert load_settings(project).profile == "local"
    assert load_settings(project).tracking_uri.startswith("sqlite:")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # written back by the calls above
    monkeypatch.setenv("LUIGIFLOW_PROFILE", "shared")
    assert load_settings(project).tracking_uri == "http://stack:5000"


def test_an_unknown_profile_names_the_missing_file(project):
    with pytest.raises(UnknownProfile, match=r"profile 'team' needs .*/\.env\.team"):
        load_settings(project, profile="team")


def test_the_scheduler_url_on_the_command_line_wins(project, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_SCHEDULER_URL", "http://from-env:8082")
    assert load_settings(project).scheduler_url == "http://from-env:8082"
    chosen = load_settings(project, scheduler_url="http://given:8082/")
    assert chosen.scheduler_url == "http://given:8082"
    assert os.environ["LUIGIFLOW_SCHEDULER_URL"] == "http://given:8082"


def test_the_printed_ui_is_the_one_set_else_the_one_make_ui_serves_else_mlflow_s(
    project, monkeypatch
):
    assert ui_address(project) == "http://127.0.0.1:5000"
    (project / UI_RECORD).parent.mkdir()
    (project / UI_RECORD).write_text("http://127.0.0.1:51577\n")  # `make ui UI_PORT=51577`
    assert ui_address(project) == "http://127.0.0.1:51577"
    monkeypatch.setenv("LUIGIFLOW_UI_URL", "https://mlflow.example.org/")
    assert ui_address(project) == "https://mlflow.example.org"
    write_env(project, ".env", LUIGIFLOW_UI_URL="http://team-ui:8080")
    monkeypatch.delenv("LUIGIFLOW_UI_URL")
    assert load_settings(project).ui_url == "http://team-ui:8080", "from .env too"
