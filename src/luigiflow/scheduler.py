"""Luigi's central scheduler (`luigid`), shared by the processes that work on one run, and
the task processes Luigi's workers fork.

Luigi's `build` returns as soon as nothing is left for the calling process right now, even
while a task of the same run still runs in another process (`keep_alive` does not wait for
those). So a process on a shared run builds in rounds: after each round it looks at the run
(its task complete? a task failed, wherever it ran? the run ended? a task disabled by the
scheduler?) and, if nothing decided, builds again as soon as luigid shows that one of the
run's tasks changed state (another process finished one), or after a growing back-off when
nothing does. Asking luigid is cheap; a round of building checks every task's outputs in the
store, so rounds are not spent on a run where nothing happened. Building again is also how a
task whose worker died comes back: luigid marks it failed once the worker is silent, and a
process that adds the run's tasks again puts it back to pending and takes it.

A task's process never outlives the process that started it. With `--workers N` Luigi forks a
process per task. Killed outright (`kill -9`, the OOM killer), a runner cannot stop them, and an
orphaned task would go on to commit its outputs into a run that another runner may be resuming
by then. So a forked task process asks the kernel for SIGTERM when its parent dies (Linux
`PR_SET_PDEATHSIG`), which ends the task as Ctrl-C does (its record KILLED, nothing committed).
The kernel sends it when the *thread* that forked exits: Luigi forks from the thread that runs
`luigi.build`, the main thread of the runner (and of a `--join` worker). Where the kernel offers
no such signal, or the parent died before the request, the task checks its parent before it
commits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from luigiflow import runstate
from luigiflow.config import ConfigError
from luigiflow.redact import redact_uri
from luigiflow.runstate import RUN, SHARED, RunContext
from luigiflow.store import client

# Luigi's worker defaults suit nightly batches (up to 5 s of jitter per poll of the scheduler,
# a minute of retries when it is unreachable); a person waits on these. luigi.toml may say
# otherwise in [worker] and [core].
WORKER_DEFAULTS = {
    ("worker", "wait_interval"): "1",
    ("worker", "wait_jitter"): "0.5",
    ("core", "rpc-retry-attempts"): "3",
    ("core", "rpc-retry-wait"): "5",
}
FIRST_WAIT_S, LONGEST_WAIT_S = 2.0, 10.0  # between two rounds, growing round by round
POLL_S = 0.5  # how often luigid is asked whether a task of the run changed state meanwhile
POLL_FAILURES = 30  # rounds in a row in which the store or luigid could not be asked: give up


def tasks_of(url: str, run_id: str, status: str = "") -> dict[str, str]:
    """The tasks luigid knows of one run, by task family: their status (PENDING, RUNNING,
    DONE, FAILED, DISABLED). `status`: only those. Raises ConfigError when it does not answer."""
    query = {"status": status, "upstream_status": "", "search": run_id}
    address = f"{url}/api/task_list?data={urllib.parse.quote(json.dumps(query))}"
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            found = json.load(response)["response"]
    except (OSError, ValueError, KeyError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError("scheduler", f"luigid at {url} does not answer ({reason})") from None
    return {
        task["name"]: task["status"]
        for task in found.values()
        if task.get("params", {}).get("run_id") == run_id  # not a run whose id contains it
    }


def check(url: str) -> None:
    """luigid must answer before a run is created on it or joined (Luigi itself would retry
    for a while, then fail in the middle of the build)."""
    tasks_of(url, "luigiflow-check", status="RUNNING")


def check_joinable(run_id: str, recorded: str, url: str, waits: int = 5) -> None:
    """The run must be built through a luigid, and this one must know its tasks (a worker
    pointed at another luigid would build the whole run on its own). Right after the run
    starts its tasks may not be there yet: ask a few times."""
    if not recorded:
        raise ConfigError(
            "--join",
            f"run {run_id} is built by a scheduler inside its runner, which no other "
            "process can join: start runs with --profile shared (or --scheduler-url)",
        )
    for attempt in range(waits):
        if tasks_of(url, run_id):
            return
        time.sleep(2 if attempt < waits - 1 else 0)
    raise ConfigError(
        "--join",
        f"luigid at {redact_uri(url)} knows no task of run {run_id}: the run is built through "
        f"{recorded}",
    )


def use_worker_defaults() -> None:
    import luigi.configuration

    config = luigi.configuration.get_config()
    for (section, key), value in WORKER_DEFAULTS.items():
        if not config.has_option(section, key):
            config.set(section, key, value)


def build_in_rounds(
    url: str, run_id: str, context: RunContext, build_once: Callable[[], str], complete
) -> bool:
    """Build (`build_once`: "done", "failed" or "waiting") until the run's task is `complete()`
    or the run cannot finish; True when it is complete."""
    use_worker_defaults()
    wait, failures = FIRST_WAIT_S, 0
    failed_before = _failed(run_id, context)  # a resumed run's old failures do not count
    before = _states(url, run_id)  # taken before building: a change during the round counts
    outcome = build_once()
    while outcome == "waiting":
        if complete():
            return True
        states = _wait_for_change(url, run_id, before, wait)
        changed = states != before
        before = states
        try:
            problem = _why_not_go_on(url, run_id, context, failed_before)
            failures = 0
        except Exception as error:  # the store or luigid briefly away: ask again next round
            failures += 1
            logging.warning("could not look at run %s (%s); trying again", run_id, error)
            if failures >= POLL_FAILURES:
                problem = f"could not look at the run {failures} times in a row"
            else:
                continue
        if problem:
            logging.error("run %s cannot finish: %s", run_id, problem)
            return False
        outcome = build_once()
        wait = FIRST_WAIT_S if changed else min(wait * 1.5, LONGEST_WAIT_S)
    return outcome == "done" or complete()


def build_runs_in_rounds(
    url: str,
    contexts: Mapping[str, RunContext],
    build_once: Callable[[list[str]], str],
    complete: Callable[[str], bool],
) -> dict[str, bool]:
    """A sweep's children through luigid, built in rounds as a run is (`build_in_rounds`),
    until each is complete or cannot finish: a child that cannot does not stop the others.
    `build_once(run_ids)` builds those runs; per run, True when its task is complete."""
    use_worker_defaults()
    failed_before = {run_id: _failed(run_id, c) for run_id, c in contexts.items()}
    result: dict[str, bool] = {}
    waiting = list(contexts)
    wait, idle_failures = FIRST_WAIT_S, 0
    before = {run_id: _states(url, run_id) for run_id in waiting}
    outcome = build_once(waiting)
    unanswered = 0
    while True:
        resolved = len(result)
        try:
            _settle(url, waiting, result, contexts, failed_before, complete)
            unanswered = 0
        except Exception as error:  # the store or luigid briefly away: ask again next round
            unanswered += 1
            logging.warning("could not look at the sweep's runs (%s); trying again", error)
        stalled = outcome == "failed" and len(result) == resolved
        idle_failures = idle_failures + 1 if stalled else 0
        # Failing rounds with nothing to show, or a store away for good: give up.
        if not waiting or idle_failures >= 3 or unanswered >= POLL_FAILURES:
            for run_id in waiting:  # what joined workers run of it ends first
                wait_for_others(url, run_id)
            return {**result, **dict.fromkeys(waiting, False)}
        states = {
            run_id: _wait_for_change(url, run_id, before[run_id], wait / len(waiting))
            for run_id in waiting
        }
        changed = states != before
        before = states
        outcome = build_once(waiting)
        wait = FIRST_WAIT_S if changed else min(wait * 1.5, LONGEST_WAIT_S)


def _settle(url, waiting: list[str], result: dict, contexts, failed_before, complete) -> None:
    """Move the runs that are complete, or cannot finish, from `waiting` to `result`."""
    for run_id in list(waiting):
        done = complete(run_id)
        context = contexts[run_id]
        problem = "" if done else _why_not_go_on(url, run_id, context, failed_before[run_id])
        if done or problem:
            result[run_id] = done
            waiting.remove(run_id)
            if problem:
                logging.error("run %s cannot finish: %s", run_id, problem)


def _states(url: str, run_id: str) -> dict[str, str] | None:
    """The run's tasks and their states in luigid; None when it does not answer."""
    try:
        return tasks_of(url, run_id)
    except ConfigError:
        return None


def _wait_for_change(
    url: str, run_id: str, before: dict[str, str] | None, seconds: float
) -> dict[str, str] | None:
    """Wait until a task of the run is in another state than `before`, at most `seconds`;
    the states last seen. A poll luigid does not answer changes nothing (the round after the
    wait finds out whether it is gone)."""
    deadline = time.monotonic() + seconds
    states = before
    while time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0)))
        answer = _states(url, run_id)
        if answer is not None:
            states = answer
        if states != before:
            break
    return states


def _failed(run_id: str, context: RunContext) -> dict[str, str]:
    """The run's failed tasks, each with when its failed record started (a sweep's child:
    the tasks another child makes for it too)."""
    found = {
        family: runstate.read_record(context.made_by(family, run_id), family)
        for family in [*context.decided(RUN), *context.decided(SHARED)]
    }
    return {f: r.started for f, r in found.items() if r and r.status == runstate.FAILED}


def _why_not_go_on(
    url: str, run_id: str, context: RunContext, failed_before: dict[str, str]
) -> str:
    """Why building the run again is pointless (empty when it is not): a task failed (its
    record says so, wherever it ran), the scheduler disabled one, or the run ended. Failures
    already recorded when this process began building (`failed_before`) do not count: a new record
    is told by its start time as written by whichever host ran it, never compared with this
    host's clock."""
    status = client().get_run(run_id).info.status
    if status != "RUNNING":
        return f"the run is {status}"
    failed = [
        f for f, started in _failed(run_id, context).items() if failed_before.get(f) != started
    ]
    if failed:
        return f"{', '.join(failed)} failed"
    disabled = tasks_of(url, run_id, status="DISABLED")
    return f"luigid disabled {', '.join(disabled)}" if disabled else ""


def wait_for_others(url: str, run_id: str, seconds: float = 120) -> None:
    """Before a failed run is ended: let the tasks other processes are running finish (at
    most `seconds`), so that their records and outputs are part of what the report shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not tasks_of(url, run_id, status="RUNNING"):
                return
        except ConfigError:
            return
        time.sleep(FIRST_WAIT_S)


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
