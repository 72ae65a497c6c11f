"""luigiflow: Luigi drives the pipeline, MLflow remembers everything.

Tasks import `PipelineTask`, `requires`, `InputFile`, `RegisteredModel` and `FollowsRunConfig`
from here, and the names they share with the runner: the verdicts (`VALIDATED`, `REJECTED`),
the conclusion keys (`VALIDATION`, `VALIDATION_FAILED`, `REGISTRATION`) and what a
registration is (`REGISTERED_BY_RUN`, `Registration`). The names are loaded on first use, so
`python src/runner.py` can read `.env` before anything imports luigi or mlflow (both read
environment variables when first imported).
"""

from __future__ import annotations

from typing import Any

SHARED = (
    "REGISTERED_BY_RUN",
    "REGISTRATION",
    "REJECTED",
    "VALIDATED",
    "VALIDATION",
    "VALIDATION_FAILED",
    "Registration",
)  # from luigiflow.names, which imports neither luigi nor mlflow
TASK_API = ("InputFile", "PipelineTask", "RegisteredModel", "requires")
__all__ = ["FollowsRunConfig", *SHARED, *TASK_API]


def __getattr__(name: str) -> Any:
    if name == "FollowsRunConfig":
        from luigiflow import values

        return values.FollowsRunConfig
    if name in SHARED:
        from luigiflow import names

        return getattr(names, name)
    if name in TASK_API:
        from luigiflow import task

        return getattr(task, name)
    raise AttributeError(f"module 'luigiflow' has no attribute {name!r}")
