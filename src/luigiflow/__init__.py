"""luigiflow: Luigi drives the pipeline, MLflow remembers everything.

Tasks import `PipelineTask`, `requires`, `InputFile`, `RegisteredModel` and `FollowsRunConfig`
from here. The names are loaded on first use, so `python src/runner.py` can read `.env`
before anything imports luigi or mlflow (both read environment variables when first imported).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FollowsRunConfig", "InputFile", "PipelineTask", "RegisteredModel", "requires"]


def __getattr__(name: str) -> Any:
    if name == "FollowsRunConfig":
        from luigiflow import values

        return values.FollowsRunConfig
    if name in __all__:
        from luigiflow import task

        return getattr(task, name)
    raise AttributeError(f"module 'luigiflow' has no attribute {name!r}")
