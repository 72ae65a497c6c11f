"""Where the project lives and which stores it talks to, from `.env` and the environment.

This module imports neither luigi nor mlflow: both read environment variables when they are
first imported, so the environment must be complete before anything imports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

DEFAULT_PROFILE = "local"  # the laptop: the embedded store and a scheduler in the process
PROFILE_VARIABLE = "LUIGIFLOW_PROFILE"
SCHEDULER_VARIABLE = "LUIGIFLOW_SCHEDULER_URL"
UI_VARIABLE = "LUIGIFLOW_UI_URL"  # the MLflow UI the printed links open (embedded store)
UI_RECORD = ".luigiflow/ui_url"  # written by `make ui`: the address it serves the store at
DEFAULT_UI = "http://127.0.0.1:5000"


class UnknownProfile(Exception):
    """A profile named on the command line or in the environment that has no `.env.<name>`."""


@dataclass(frozen=True)
class Settings:
    project_root: Path
    config_path: Path
    tracking_uri: str
    artifact_root: Path
    profile: str = DEFAULT_PROFILE
    scheduler_url: str = ""  # a central luigid; empty: a scheduler inside the runner
    ui_url: str = DEFAULT_UI  # where `make ui` serves the embedded store (`ui_address`)

    @property
    def embedded_store(self) -> bool:
        """True for the project's own SQLite store (no server), where artifacts are local."""
        return self.tracking_uri.startswith("sqlite:")


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding a `.env` or `luigi.toml`."""
    for folder in (start, *start.parents):
        if (folder / ".env").is_file() or (folder / "luigi.toml").is_file():
            return folder
    return start


def env_files(project_root: Path, profile: str) -> list[Path]:
    """The files that make a profile's environment, the one that wins first: `.env.local` (a
    person's own, never committed), `.env.<profile>` (e.g. `.env.shared`: the team's stack),
    `.env` (what every profile shares). The environment itself wins over all of them."""
    names = [".env.local"] + ([f".env.{profile}"] if profile != DEFAULT_PROFILE else []) + [".env"]
    if profile != DEFAULT_PROFILE and not (project_root / f".env.{profile}").is_file():
        raise UnknownProfile(
            f"profile '{profile}' needs {project_root / f'.env.{profile}'}, which does not exist"
        )
    return [project_root / name for name in names]


def load_settings(
    project_root: Path,
    config_path: str | None = None,
    profile: str | None = None,
    scheduler_url: str | None = None,
) -> Settings:
    """Load the profile's `.env` files into the environment (never overriding it) and resolve
    paths. `profile`: from the command line, else `LUIGIFLOW_PROFILE`, else `local`;
    `scheduler_url` from the command line wins over `LUIGIFLOW_SCHEDULER_URL`.

    Relative paths in those files are taken relative to the project root, so the runner works
    from any working directory. The resolved values are written back to the environment so
    that Luigi worker processes and MLflow see the same absolute locations.
    """
    profile = profile or os.environ.get(PROFILE_VARIABLE) or DEFAULT_PROFILE
    for path in env_files(project_root, profile):
        load_dotenv(path, override=False)
    scheduler_url = (scheduler_url or os.environ.get(SCHEDULER_VARIABLE, "")).rstrip("/")

    root = Path(os.environ.get("PROJECT_ROOT", "."))
    root = (project_root / root).resolve() if not root.is_absolute() else root

    config = Path(config_path or os.environ.get("LUIGI_CONFIG_PATH", "luigi.toml"))
    if not config.is_absolute():
        # A --config given on the command line is relative to where the user stands.
        config = (Path.cwd() if config_path else root) / config
    config = config.resolve()

    tracking_uri = absolute_sqlite_uri(
        os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"), root
    )
    artifact_root = Path(os.environ.get("LUIGIFLOW_ARTIFACT_ROOT", "mlartifacts"))
    artifact_root = artifact_root if artifact_root.is_absolute() else root / artifact_root

    os.environ.pop("LUIGI_CONFIG_PATH", None)  # for Luigi to read: see import_luigi
    os.environ.update(
        PROJECT_ROOT=str(root),
        LUIGI_CONFIG_PARSER="toml",
        MLFLOW_TRACKING_URI=tracking_uri,
        LUIGIFLOW_ARTIFACT_ROOT=str(artifact_root),
        LUIGIFLOW_PROFILE=profile,
    )
    if scheduler_url:
        os.environ[SCHEDULER_VARIABLE] = scheduler_url
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots go to files, never to a window
    if tracking_uri.startswith("sqlite:"):
        # A fresh SQLite connection per session: safe across Luigi's forked worker processes.
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    ui_url = ui_address(root)
    return Settings(root, config, tracking_uri, artifact_root, profile, scheduler_url, ui_url)


def import_luigi() -> None:
    """Import Luigi without letting it parse the config itself. As it is imported, it reads
    LUIGI_CONFIG_PATH and ./luigi.toml with a TOML reader of its own (a traceback for a syntax
    error, a refusal of valid TOML such as an array of mixed types), though all it is given is
    its own sections, checked (`values.install_luigi_sections`). So it is imported with its
    cfg parser (no such file in a project), and uses its TOML parser, reading no file, after."""
    os.environ["LUIGI_CONFIG_PARSER"] = "cfg"
    try:
        import luigi  # noqa: F401
    finally:
        os.environ["LUIGI_CONFIG_PARSER"] = "toml"


def ui_address(root: Path) -> str:
    """The UI a person opens the printed links in: LUIGIFLOW_UI_URL, else the address the last
    `make ui` served (`make ui UI_PORT=51577`), else MLflow's default."""
    recorded = root / UI_RECORD
    written = recorded.read_text().strip() if recorded.is_file() else ""
    return (os.environ.get(UI_VARIABLE) or written or DEFAULT_UI).rstrip("/")


def absolute_sqlite_uri(uri: str, root: Path) -> str:
    """`sqlite:///mlflow.db` names a file relative to the working directory: pin it to `root`."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = Path(uri[len(prefix) :])
    if path.is_absolute():
        return uri
    return prefix + str((root / path).resolve())
