"""`python src/serve.py`: serve the registered model over REST, as `mlflow models serve` does.

The model is `models:/<[Register] model_name>@<[Register] alias>` from luigi.toml, on the
tracking store `.env` names, on 127.0.0.1. It is loaded by the project's own loader (checked
against the run that made it, and running no code from the artifact) and handed to MLflow's
scoring server in this process: `mlflow models serve` would load the folder again with MLflow's
loader, which trusts whatever the model's MLmodel says. POST raw rows (the columns of
test.csv) to /invocations; see docs/tutorial.md.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from luigiflow.settings import load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python src/serve.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model-uri", help="default: models:/<model_name>@<alias> of [Register]")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--config", metavar="PATH")
    args = parser.parse_args()
    settings = load_settings(PROJECT_ROOT, args.config)

    from luigiflow.config import load_config
    from luigiflow.registry import load_model
    from luigiflow.runstate import draft
    from luigiflow.worker import load_task_classes

    try:
        # Register's values as a run's plan reads them: model_name follows the experiment.
        task_classes = load_task_classes(["tasks"])
        config = load_config(settings.config_path, settings.project_root, task_classes)
        register = task_classes["Register"](run_id=draft(config.task_sections(), "Register", ""))
        uri = args.model_uri or f"models:/{register.model_name}@{register.alias}"
        model = load_model(uri)
    except Exception as error:
        sys.exit(f"error: {error}")
    import uvicorn
    from mlflow.pyfunc import scoring_server

    print(f"Serving {uri} from {settings.tracking_uri} at http://127.0.0.1:{args.port}/invocations")
    sys.stdout.flush()
    uvicorn.run(scoring_server.init(model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
