"""One attempt at running a task, and the wrapper that makes every task's `run()` one.

The wrapper gives the user's code a fresh staging folder, writes the task's record when it
starts and ends, and commits the outputs with the manifest last, so that a task that fails,
is interrupted or is killed outright never leaves outputs that look complete. It tracks a run
once even when a subclass's `run()` calls `super().run()`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from luigiflow import cards, models, runstate
from luigiflow.names import (
    CARD,
    ERRORS_FOLDER,
    EXIT_INTERRUPTED,
    FINGERPRINT_TAG,
    MANIFEST,
    fingerprint_tag_value,
)
from luigiflow.redact import Redactor
from luigiflow.scheduler import check_parent, die_with_parent
from luigiflow.settings import SCHEDULER_VARIABLE
from luigiflow.sourcecode import library_versions
from luigiflow.store import Ending, client, request_timeout
from luigiflow.targets import TaskFolder, TaskWriter

DURATION_METRIC = "duration_s"  # per task, as `duration_s/<Task>`: the UI charts them together


class TaskTimeout(BaseException):
    """An attempt ran longer than its task's `timeout_s`. Not an Exception, so that the
    task's own `except Exception` (or a library's: scikit-learn scores a failed fold as NaN)
    cannot swallow it."""


class Attempt:
    """One attempt at running a task: its staging folder (emptied first) and what it logged."""

    def __init__(self, task: Any, number: int) -> None:
        self.task, self.family, self.run_id, self.number = (
            task,
            task.task_family,
            task.run_id,
            number,
        )
        self.metrics: dict[str, float] = {}
        self.params: dict[str, str] = {}
        self.profiles: dict[str, str] = {}
        self.card_sections: list[tuple[str, Any]] = []
        self.began, self.user_seconds = time.monotonic(), 0.0
        self.started = datetime.now(UTC)
        self.writer = TaskWriter(TaskFolder(self.run_id, self.family))
        self.writer.begin()
        self.manifest_digest = ""
        self.models: dict[str, str] = {}  # output name -> Logged Model id, made by save_model

    def run_user_code(self, user_run: Callable[[Any], None]) -> None:
        began = time.monotonic()
        try:
            with time_limit(float(self.task.timeout_s), self.family):
                user_run(self.task)
        finally:
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
        for name, model_id in self.models.items():
            models.upload(self.run_id, model_id, self.writer.path(task.outputs[name]))
        self.manifest_digest = self.writer.commit(self.manifest())
        for model_id in self.models.values():
            models.finalize(model_id, ready=True)

    def abandon(self) -> None:
        """The attempt failed: its Logged Models are FAILED, never loaded or reused."""
        for model_id in self.models.values():
            models.finalize(model_id, ready=False)

    def judged_model(self) -> str | None:
        """The Logged Model this task's metrics are about: its own, or the one upstream
        model it reads (the Evaluator's metrics judge the Trainer's model)."""
        if self.models:
            return next(iter(self.models.values()))
        upstream = [
            model_id
            for dep in self.task.upstream()
            for model_id in ((dep.folder().manifest() or {}).get("models") or {}).values()
        ]
        return upstream[0] if len(upstream) == 1 else None

    def manifest(self) -> dict:
        task = self.task
        return {
            "task": self.family,
            "fingerprint": task.fingerprint(),
            "run_id": self.run_id,
            "params": task.significant_params(),
            "outputs": dict(task.outputs),
            "models": dict(self.models),  # output -> Logged Model id (models:/m-...)
            "metrics": dict(self.metrics),  # logged again on a run that reuses the outputs
            "upstream": {dep.task_family: repr(dep.folder()) for dep in task.upstream()},
            "started": self.started.isoformat(),
            "duration_s": round(time.monotonic() - self.began, 3),
            "user_code_s": round(self.user_seconds, 3),
            "attempt": self.number,
            "versions": library_versions(),
        }


class TaskBookkeeping:
    """What the run keeps of one task across its attempts: the record and the status."""

    def __init__(self, task: Any) -> None:
        self.task, self.family, self.run_id = task, task.task_family, task.run_id
        self.began = time.monotonic()
        self.record = runstate.TaskRecord.begin(self.family, task.context.tasks[self.family].reason)
        runstate.write_record(self.run_id, self.record)

    def failed(self, attempt: Attempt, text: str) -> str:
        """An attempt failed: its traceback in the run, its last line in the record."""
        text = Redactor.from_environment(self.task.context.config).text(text)
        error = text.strip().splitlines()[-1]
        self.record.attempts.append(_attempt_entry(attempt, runstate.FAILED, error))
        client().log_text(self.run_id, text, f"{ERRORS_FOLDER}/{self.family}.txt")
        return error

    def end(self, attempt: Attempt, status: str, error: str = "") -> None:
        """The record, and one request for everything the task logged on the run: its
        metrics and params, its duration (a metric, `duration_s/<Task>`) and, once it
        finished, the fingerprint tag later runs find it by."""
        from mlflow.entities import Metric, Param, RunTag

        seconds = time.monotonic() - self.began
        if status != runstate.FAILED:  # a failed attempt is in the record already
            self.record.attempts.append(_attempt_entry(attempt, status, error))
        self.record.end(status, seconds, attempt.user_seconds, error)
        runstate.write_record(self.run_id, self.record)
        now = int(time.time() * 1000)
        tags = []
        if status == runstate.FINISHED:
            value = fingerprint_tag_value(
                self.task.fingerprint()["digest"], attempt.manifest_digest
            )
            tags.append(RunTag(FINGERPRINT_TAG.format(self.family), value))
        model_id = best_effort(attempt.judged_model) if attempt.metrics else None
        metrics = [Metric(k, v, now, 0, model_id=model_id) for k, v in attempt.metrics.items()]
        metrics.append(Metric(f"{DURATION_METRIC}/{self.family}", round(seconds, 3), now, 0))
        client().log_batch(
            self.run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in attempt.params.items()],
            tags=tags,
        )


class RunEnded(Exception):
    """The run ended (failed elsewhere, or stopped by its creator) before this task started."""


def _refuse_ended_run(task: Any) -> None:
    """With other processes on the run (a central scheduler), it may have ended while this
    process waited for work: start nothing in an ended run."""
    status = client().get_run(task.run_id).info.status
    if status != "RUNNING":
        raise RunEnded(f"run {task.run_id} is {status}: {task.task_family} is not started")


def _scheduled() -> bool:
    """Other processes may work on the run: it is built through a central scheduler."""
    return bool(os.environ.get(SCHEDULER_VARIABLE))


def _still_to_run(task: Any) -> bool:
    """With other processes on the run: False when the task was finished elsewhere
    meanwhile; RunEnded when the run ended while this process waited."""
    if not _scheduled():
        return True
    if _finished_elsewhere(task):
        return False
    _refuse_ended_run(task)
    return True


def _superseded(attempt: Attempt) -> bool:
    """After an attempt, however it ended: True, its outputs discarded and nothing recorded,
    when another worker finished the task meanwhile. The check narrows the window in which
    two workers publish the same task; it cannot close it (a worker paused in the middle of
    its upload), and a mixed result then fails verification instead of being reused."""
    if not _scheduled() or not best_effort(_finished_elsewhere, attempt.task):
        return False
    attempt.writer.discard()
    return True


def _finished_elsewhere(task: Any) -> bool:
    """With a central scheduler, a process that was paused (or cut off) longer than luigid's
    disconnect delay finds its task handed to another worker, maybe finished there. The outputs
    that count are those already committed: this process neither runs the task again nor
    publishes its own outputs over them."""
    family = task.task_family
    listed = {f.path for f in client().list_artifacts(task.run_id, family)}
    if f"{family}/{MANIFEST}" not in listed:
        return False
    logging.getLogger("luigiflow").warning(
        "%s was finished by another worker (luigid handed it on while this process was "
        "silent): its outputs are kept; this process's, if any, are discarded",
        family,
    )
    return True


def best_effort(call: Callable[..., Any], *args: Any) -> Any:
    """Bookkeeping after a task failed: when the store fails too (a full disk, a dead server),
    the task's own error is what the person must see, so this one goes to the log only."""
    try:
        return call(*args)
    except Exception:
        logging.getLogger("luigiflow").exception("could not record the failure in the store")
        return None


def _after_failure(books: TaskBookkeeping, attempt: Attempt, text: str, last: bool) -> bool:
    """Record a failed attempt (its Logged Model FAILED, its traceback, on the last one the
    task's record) within one request timeout in all: a store that hangs, often the very
    cause of the failure, would otherwise hold the task for a timeout and its retries per
    call, minutes before the run could even begin to end. Returns whether a newer attempt
    superseded this one (then nothing is recorded)."""
    bounded = Ending(request_timeout())
    bounded.step("mark the attempt's Logged Model FAILED", attempt.abandon)
    if bounded.step("check for a newer attempt", lambda: _superseded(attempt)):
        return True
    error = bounded.step("record the failure", lambda: books.failed(attempt, text)) or ""
    if last:
        bounded.step("record the task FAILED", lambda: books.end(attempt, runstate.FAILED, error))
    return False


def _attempt_entry(attempt: Attempt, status: str, error: str) -> dict:
    seconds = round(time.monotonic() - attempt.began, 3)
    return {"attempt": attempt.number, "status": status, "duration_s": seconds, "error": error}


@contextmanager
def time_limit(seconds: float, family: str) -> Iterator[None]:
    """Raise TaskTimeout in the task's code after `seconds` (0: no limit). Tasks run in the
    main thread of the runner or of a Luigi worker process, where a timer signal reaches them."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TaskTimeout(f"{family} timed out after {seconds:g} s ([{family}] timeout_s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _interrupted(books: TaskBookkeeping, attempt: Attempt) -> None:
    """Ctrl-C or SIGTERM in the task: it ends KILLED. A Luigi worker process exits here (the
    runner reports); the runner's own process goes on to end the run."""
    _hold_interruptions()  # a second Ctrl-C must not cut the bookkeeping short
    books.end(attempt, runstate.KILLED)
    if multiprocessing.parent_process() is not None:
        os._exit(EXIT_INTERRUPTED)


def _hold_interruptions() -> None:
    """Ignore further Ctrl-C and SIGTERM in this process (tasks run in its main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def tracked(user_run: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a task's `run`: every attempt (1 + `retries`) from an empty staging folder, the
    record and status, the manifest last, each failure recorded. A subclass's `run` calling
    `super().run()` is tracked once, not twice."""

    @functools.wraps(user_run)
    def run(self: Any) -> None:
        if self._attempt is not None:  # super().run() inside a tracked run
            user_run(self)
            return
        die_with_parent()  # an orphaned task must not commit: see `scheduler`
        if not _still_to_run(self):
            return
        books = TaskBookkeeping(self)
        for number in itertools.count(1):
            attempt = self._attempt = Attempt(self, number)
            try:
                attempt.run_user_code(user_run)
                if _superseded(attempt):
                    best_effort(attempt.abandon)  # its Logged Model, if any: FAILED
                    return
                check_parent()
                attempt.commit()
            except KeyboardInterrupt:
                best_effort(attempt.abandon)
                _interrupted(books, attempt)
                raise
            except BaseException:
                last = number > int(self.retries)
                if _after_failure(books, attempt, traceback.format_exc(), last):
                    return  # superseded, e.g. its timeout ran on while paused
                if last:
                    raise
                continue
            finally:
                self._attempt = None
            books.end(attempt, runstate.FINISHED)
            return

    return run
