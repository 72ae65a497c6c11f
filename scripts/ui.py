"""`make ui`: the MLflow UI on the project's embedded store, with every experiment's address.

The address is recorded in `.luigiflow/ui_url`, so that the links a runner prints open this
UI whatever port it was given (`make ui UI_PORT=51577`). Each address opens the experiment's
"Model training" view: MLflow 3's UI opens on its GenAI side unless the address says
`workflowType=machine_learning`.

    python scripts/ui.py --port 5000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from luigiflow.settings import UI_RECORD  # noqa: E402  (light: no luigi, no mlflow)


def experiment_pages(store: Path, address: str) -> list[str]:
    """A line per active experiment of the store: its name and its page in the UI."""
    if not store.is_file():
        return []
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active' "
            "ORDER BY experiment_id"
        ).fetchall()
    return [
        f"  {name}: {address}/#/experiments/{number}?workflowType=machine_learning"
        for number, name in rows
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--print-only", action="store_true", help="say the addresses, serve not")
    args = parser.parse_args(argv)
    address = f"http://127.0.0.1:{args.port}"
    record = ROOT / UI_RECORD
    record.parent.mkdir(exist_ok=True)
    record.write_text(address + "\n")
    print(f"MLflow UI on {ROOT / 'mlflow.db'} at {address}")
    print("\n".join(experiment_pages(ROOT / "mlflow.db", address)), flush=True)
    if args.print_only:
        return
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # see the Makefile's ui target
    mlflow = str(Path(sys.executable).parent / "mlflow")
    os.chdir(ROOT)
    serve = ["--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1"]
    serve += ["--port", str(args.port), "--workers", "1"]
    os.execve(mlflow, [mlflow, "ui", *serve], env)


if __name__ == "__main__":
    main()
