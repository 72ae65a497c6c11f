"""Where the project lives and which stores it talks to, from `.env` and the environment.

This module imports neither luigi nor mlflow: both read environment variables when they are
first imported, so the environment must be complete before anything imports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

ENV_FILES = (".env.local", ".env")  # earlier files win; the environment wins over both


@dataclass(frozen=True)
class Settings:
    project_root: Path
    config_path: Path
    tracking_uri: str
    artifact_root: Path

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


def load_settings(project_root: Path, config_path: str | None = None) -> Settings:
    """Load `.env.local` and `.env` into the environment (never overriding it) and resolve paths.

    Relative paths in those files are taken relative to the project root, so the runner works
    from any working directory. The resolved values are written back to the environment so
    that Luigi worker processes and MLflow see the same absolute locations.
    """
    for name in ENV_FILES:
        load_dotenv(project_root / name, override=False)

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

    os.environ.update(
        PROJECT_ROOT=str(root),
        LUIGI_CONFIG_PATH=str(config),
        LUIGI_CONFIG_PARSER="toml",
        MLFLOW_TRACKING_URI=tracking_uri,
        LUIGIFLOW_ARTIFACT_ROOT=str(artifact_root),
    )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots go to files, never to a window
    if tracking_uri.startswith("sqlite:"):
        # A fresh SQLite connection per session: safe across Luigi's forked worker processes.
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    return Settings(root, config, tracking_uri, artifact_root)


def absolute_sqlite_uri(uri: str, root: Path) -> str:
    """`sqlite:///mlflow.db` names a file relative to the working directory: pin it to `root`."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = Path(uri[len(prefix) :])
    if path.is_absolute():
        return uri
    return prefix + str((root / path).resolve())
