"""Model serialization on its own: MLflow's skops and cloudpickle formats, save and load,
each in a fresh process (so the one-time import of the serializer is counted).

    python bench/serialization.py save skops /tmp/model   -> {"seconds": ...}
    python bench/serialization.py load skops /tmp/model   -> {"seconds": ...}
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def save(serialization: str, path: Path) -> float:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "bench"))
    from plain import SKOPS_TRUSTED, pipeline, typed

    train = typed(pd.read_csv(REPO / "input/train.csv"))
    features = train.drop(columns=["PassengerId", "Survived"])
    model = pipeline().fit(features, train["Survived"])
    signature = infer_signature(features.head(5), model.predict(features.head(5)))
    requirements = [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy")]
    started = time.monotonic()
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=signature,
        input_example=features.head(5),
        pip_requirements=requirements,
        serialization_format=serialization,
        **({"skops_trusted_types": SKOPS_TRUSTED} if serialization == "skops" else {}),
    )
    return time.monotonic() - started


def load(path: Path) -> float:
    import mlflow.pyfunc

    started = time.monotonic()
    mlflow.pyfunc.load_model(str(path))
    return time.monotonic() - started


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mode, serialization, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    seconds = save(serialization, folder) if mode == "save" else load(folder)
    print(json.dumps({"seconds": seconds}))
