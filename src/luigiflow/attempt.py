"""One attempt at running a task, and the wrapper that makes every task's `run()` one.

The wrapper gives the user's code a fresh staging folder, writes the task's record when it
starts and ends, and commits the outputs with the manifest last, so that a task that fails,
is interrupted or is killed outright never leaves outputs that look complete. It tracks a run
once even when a subclass's `run()` calls `super().run()`.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from luigiflow import cards, records
from luigiflow.names import (
    CARD,
    DURATION_TAG,
    ERRORS_FOLDER,
    FINGERPRINT_TAG,
    STATUS_TAG,
    USER_CODE_TAG,
)
from luigiflow.provenance import library_versions
from luigiflow.targets import TaskFolder, TaskWriter, client


class Attempt:
    """One attempt at running a task: its staging folder, what it logged, its record."""

    def __init__(self, task: Any) -> None:
        self.task, self.family, self.run_id = task, task.task_family, task.run_id
        self.metrics: dict[str, float] = {}
        self.params: dict[str, str] = {}
        self.profiles: dict[str, str] = {}
        self.card_sections: list[tuple[str, Any]] = []
        self.began, self.user_seconds = time.monotonic(), 0.0
        self.started = datetime.now(UTC)
        self.record = records.TaskRecord.begin(self.family, task.context.tasks[self.family].reason)
        self.writer = TaskWriter(TaskFolder(self.run_id, self.family))
        self.writer.begin()
        records.write(self.run_id, self.record)
        client().set_tag(self.run_id, STATUS_TAG.format(self.family), records.RUNNING)

    def run_user_code(self, user_run: Callable[[Any], None]) -> None:
        began = time.monotonic()
        user_run(self.task)
        self.user_seconds = time.monotonic() - began

    def commit(self) -> None:
        """The card, then the manifest last: from now on the outputs count."""
        task = self.task
        cards.write_card(
            self.writer.path(CARD),
            task.significant_params(),
            task.outputs,
            self.profiles,
            self.card_sections,
        )
        self.writer.commit(self.manifest())

    def manifest(self) -> dict:
        task = self.task
        return {
            "task": self.family,
            "fingerprint": task.fingerprint(),
            "run_id": self.run_id,
            "params": task.significant_params(),
            "outputs": dict(task.outputs),
            "upstream": {dep.task_family: repr(dep.folder()) for dep in task.upstream()},
            "started": self.started.isoformat(),
            "duration_s": round(time.monotonic() - self.began, 3),
            "user_code_s": round(self.user_seconds, 3),
            "versions": library_versions(),
        }

    def end(self, status: str, error: str = "") -> None:
        """The record, and one request for everything the task logged on the run: metrics,
        params, status and timings and, once it finished, the fingerprint later runs find."""
        from mlflow.entities import Metric, Param, RunTag

        seconds = time.monotonic() - self.began
        self.record.end(status, seconds, self.user_seconds, error)
        records.write(self.run_id, self.record)
        now = int(time.time() * 1000)
        tags = {
            STATUS_TAG.format(self.family): status,
            DURATION_TAG.format(self.family): f"{seconds:.3f}",
            USER_CODE_TAG.format(self.family): f"{self.user_seconds:.3f}",
        }
        if status == records.FINISHED:
            tags[FINGERPRINT_TAG.format(self.family)] = self.task.fingerprint()["digest"]
        client().log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in self.metrics.items()],
            params=[Param(k, v) for k, v in self.params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )


def tracked(user_run: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a task's `run`: fresh output folder, record and status, manifest last, failure
    recorded. A subclass's `run` calling `super().run()` is tracked once, not twice."""

    @functools.wraps(user_run)
    def run(self: Any) -> None:
        if self._attempt is not None:  # super().run() inside a tracked run
            user_run(self)
            return
        attempt = self._attempt = Attempt(self)
        status, error = records.FAILED, ""
        try:
            attempt.run_user_code(user_run)
            attempt.commit()
            status = records.FINISHED
        except KeyboardInterrupt:
            status = records.KILLED
            raise
        except BaseException:
            text = traceback.format_exc()
            error = text.strip().splitlines()[-1]
            client().log_text(self.run_id, text, f"{ERRORS_FOLDER}/{self.task_family}.txt")
            raise
        finally:
            self._attempt = None
            attempt.end(status, error)

    return run
