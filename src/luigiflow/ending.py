"""One deadline for a sequence of calls to the store, so that a store that hangs cannot hold
the runner for a full request timeout (and its retries) per call: the ending of a run, of a
sweep's runs, and the bookkeeping of a task that failed.

Each call runs in a thread of its own, joined with the time left; a call still waiting then is
left to finish or fail on its own (nothing waits for it), and said in `problems`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable


class Ending:
    """The steps that end a run, bounded together by one deadline, so that a store that fails
    or hangs cannot keep the runner from ending: requests that each wait their timeout cannot
    add up. The clock starts at the first step (the build is not the ending's). After a step
    timed out, only the steps that must be tried (the run's status) are, with what time is
    left and, past the deadline, one request timeout more between them all: the whole ending
    takes at most `seconds` plus one request timeout."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = ending_seconds() if seconds is None else seconds
        self.grace = request_timeout()
        self.deadline: float | None = None
        self.problems: list[str] = []
        self.timed_out = False

    def step(self, what: str, call: Callable[[], object], always: bool = False) -> object:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        if self.timed_out and not always:
            return None
        end = self.deadline + (self.grace if always else 0.0)
        result: list[object] = []
        failure: list[BaseException] = []

        def work() -> None:
            try:
                result.append(call())
            except BaseException as error:
                failure.append(error)

        thread = threading.Thread(target=work, name=f"ending: {what}", daemon=True)
        thread.start()
        thread.join(max(end - time.monotonic(), 0.0))
        if thread.is_alive():
            self.timed_out = True
            self.problems.append(f"could not {what} within the deadline")
            logging.error("could not %s within the deadline", what)
        elif failure:
            self.problems.append(f"could not {what} ({_briefly(failure[0])})")
            logging.error("could not %s", what, exc_info=failure[0])
        return result[0] if result else None


def ending_seconds() -> float:
    """How long the ending of a run (or of a sweep, all its runs) may take:
    LUIGIFLOW_ENDING_TIMEOUT_S, 60 s by default."""
    return float(os.environ.get("LUIGIFLOW_ENDING_TIMEOUT_S", "60"))


def request_timeout() -> float:
    """One request to a tracking server: MLFLOW_HTTP_REQUEST_TIMEOUT (`.env` sets it)."""
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or "30")


def _briefly(error: BaseException) -> str:
    """An error's type and the first line of its message, short enough for one paragraph."""
    first = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first[:100]}" if first else type(error).__name__
