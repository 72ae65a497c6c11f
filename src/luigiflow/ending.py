"""How a run ends: within one deadline whatever the store does, and with no task process
left behind.

One deadline for a sequence of calls to the store, so that a store that hangs cannot hold
the runner for a full request timeout (and its retries) per call: the ending of a run, of a
sweep's runs, and the bookkeeping of a task that failed.

Each call runs in a thread of its own, joined with the time left; a call still waiting then is
left to finish or fail on its own (nothing waits for it), and said in `problems`.

A task's process never outlives the process that started it.

With `--workers N` Luigi forks a process per task. Killed outright (`kill -9`, the OOM
killer), a runner cannot stop them, and an orphaned task would go on to commit its outputs
into a run that another runner may be resuming by then: two processes publishing one task, and
records that contradict the run's status. So a forked task process asks the kernel for SIGTERM
when its parent dies (Linux `PR_SET_PDEATHSIG`); SIGTERM ends the task as Ctrl-C does (its
record KILLED, nothing committed). The kernel sends it when the *thread* that forked exits:
Luigi forks task processes from the thread that runs `luigi.build`, which is the main thread
of the runner (and of a `--join` worker) and outlives every task it starts. Where the kernel
offers no such signal, and for a parent that died before the request was made, the task checks
its parent again before it commits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
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


# A task's process dies with the process that started it ---------------------------------------
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Orphaned(KeyboardInterrupt):
    """The process that started this task is gone: the task stops as if interrupted, so that
    it commits nothing and records itself KILLED."""


def die_with_parent() -> None:
    """In a forked task process, have SIGTERM sent to it when its parent dies; Orphaned if the
    parent is gone already. Nothing to do in the runner's own process."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux") and _stop_when_orphaned():
        _request_death_signal(signal.SIGTERM)
    check_parent()


def check_parent() -> None:
    """Orphaned when this task's process was forked by a process that is gone (its parent is
    then another process, the one that adopted it)."""
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise Orphaned(f"the process that started this task (pid {parent.pid}) is gone")


def _stop_when_orphaned() -> bool:
    """SIGTERM raises Orphaned once the parent is gone, whatever this process did with it
    before (the runner's own handler, inherited, raises its Ctrl-C; a `--join` worker's would
    end the process before its record says so). From a live parent it does what it did.
    False where no handler can be set (not the process's main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: object) -> None:
        check_parent()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)
    return True


def _request_death_signal(signum: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError):  # the check before committing still holds
        logging.getLogger("luigiflow").warning(
            "could not ask to be stopped with the runner", exc_info=True
        )
