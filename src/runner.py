"""Run the pipeline configured in luigi.toml as one MLflow run: `python src/runner.py --help`."""

import sys
from pathlib import Path

# Importable from a fresh clone, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from luigiflow.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main(project_root=Path(__file__).resolve().parents[1], task_modules=["tasks"]))
