"""Where a run's code came from: the git commit, whether the tree was dirty, and the diff."""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

LIBRARIES = ("luigi", "mlflow", "scikit-learn", "pandas", "pyarrow")


@dataclass(frozen=True)
class GitState:
    commit: str
    dirty: bool
    diff: str  # `git diff HEAD` plus the untracked files, empty when the tree is clean


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def git_state(root: Path) -> GitState | None:
    """The state of the work tree at `root`, or None when it is not a git checkout."""
    try:
        _git(root, "rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff")
    except subprocess.CalledProcessError:  # a repository without commits yet
        commit, diff = "none", ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    if untracked:
        diff += "\n# Untracked files (not in the diff):\n" + "".join(
            f"#   {f}\n" for f in untracked
        )
    return GitState(commit=commit, dirty=bool(diff.strip()), diff=diff)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (read without importing them)."""
    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


@functools.cache
def version(name: str) -> str:
    """An installed distribution's version, read once per process (each read scans metadata)."""
    from importlib.metadata import version as installed

    return installed(name)
