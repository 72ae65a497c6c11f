"""Run the pipeline configured in luigi.toml as one MLflow run: `python src/runner.py --help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # run from a fresh clone without installing

from luigiflow.cli import main

if __name__ == "__main__":
    sys.exit(main(project_root=Path(__file__).resolve().parents[1], task_modules=["tasks"]))
