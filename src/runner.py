"""Run the pipeline configured in luigi.toml as one MLflow run: `python src/runner.py --help`."""

import importlib.util
import sys
from pathlib import Path

# Importable from a fresh clone, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# What the runner imports as it goes: a Python without them (not the project's .venv) is told
# in one line how to run it, not a traceback halfway through a run.
NEEDED = ("luigi", "mlflow", "pandas", "sklearn", "dotenv", "skops")


def missing_dependencies() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


if __name__ == "__main__":
    if missing := missing_dependencies():
        print(
            f"error: this Python ({sys.executable}) lacks {', '.join(missing)}: run `make run` "
            "(it installs the project into .venv), or .venv/bin/python src/runner.py",
            file=sys.stderr,
        )
        sys.exit(2)
    from luigiflow.cli import exit_now, main

    exit_now(main(project_root=Path(__file__).resolve().parents[1], task_modules=["tasks"]))
