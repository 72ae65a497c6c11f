"""A run's life, written once: opened, built under guard, then ended whatever happened, with
the exit status that matches how it ended. Real runs in a throwaway embedded store; the work
in between is what each test makes it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from luigiflow import lifecycle, store
from luigiflow.names import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from luigiflow.redact import MASK, Redactor
from luigiflow.store import Ending

SECRET = "pw-4f9c1e7d"


class Recorded:
    """Runs that a test drives: `open` creates real runs, `build` does what the test says, and
    `end` records what `live` ended them with (and ends them in the store, as a run's `end`
    does)."""

    def __init__(self, client, experiment_id: str, build, runs: int = 1, fail_open=None):
        self.client, self.experiment_id, self._build = client, experiment_id, build
        self.count, self.fail_open = runs, fail_open
        self.run_ids: list[str] = []
        self.ended: tuple[str, int] | None = None

    def open(self) -> None:
        for _ in range(self.count):
            self.run_ids.append(self.client.create_run(self.experiment_id).info.run_id)
        if self.fail_open:
            raise self.fail_open

    def opened(self) -> list[str]:
        return list(self.run_ids)

    def build(self) -> bool:
        return self._build()

    def end(self, status: str, code: int, ending: Ending) -> int:
        self.ended = (status, code)
        for run_id in self.run_ids:
            ending.step("end the run", lambda r=run_id: self.client.set_terminated(r, status))
        return code


@pytest.fixture
def experiment_id(client, settings) -> str:
    return store.experiment(client, "lifecycle", settings).experiment_id


@pytest.fixture(autouse=True)
def signals_restored():
    """`live` leaves Ctrl-C and SIGTERM ignored (the ending must not be cut short); the test
    process gets its own handlers back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def raises(error: BaseException):
    def build() -> bool:
        raise error

    return build


@pytest.mark.parametrize(
    ("build", "status", "code"),
    [
        (lambda: True, "FINISHED", 0),
        (lambda: False, "FAILED", 1),
        (raises(KeyboardInterrupt()), "KILLED", 130),
        (raises(lifecycle.Terminated()), "KILLED", 143),
    ],
    ids=["succeeded", "a task failed", "ctrl-c", "sigterm"],
)
def test_every_opened_run_is_ended_with_the_status_of_its_build(
    client, experiment_id, build, status, code
):
    runs = Recorded(client, experiment_id, build, runs=3)
    assert lifecycle.live(runs, client, Redactor()) == code
    assert runs.ended == (status, code)
    assert [client.get_run(r).info.status for r in runs.run_ids] == [status] * 3


def test_a_runner_error_fails_the_runs_and_lands_in_each_masked(client, experiment_id, capsys):
    runs = Recorded(client, experiment_id, raises(RuntimeError(f"store said {SECRET}")), runs=2)
    assert lifecycle.live(runs, client, Redactor([SECRET])) == EXIT_FAILED
    assert runs.ended == ("FAILED", EXIT_FAILED)
    error = capsys.readouterr().err
    assert error.strip() == f"error: store said {MASK}", "one line, the secret masked"
    for run_id in runs.run_ids:
        uploaded = Path(client.get_run(run_id).info.artifact_uri) / "errors/runner.txt"
        text = uploaded.read_text()
        assert "Traceback" in text and "RuntimeError" in text and SECRET not in text


def test_a_failure_before_any_run_exists_ends_nothing(client, experiment_id):
    runs = Recorded(client, experiment_id, lambda: True, runs=0, fail_open=RuntimeError("no"))
    assert lifecycle.live(runs, client, Redactor()) == EXIT_FAILED
    assert runs.ended is None, "no run was opened, so none is ended"


def test_a_failure_while_opening_ends_the_runs_already_created(client, experiment_id):
    runs = Recorded(client, experiment_id, lambda: True, runs=2, fail_open=RuntimeError("half"))
    assert lifecycle.live(runs, client, Redactor()) == EXIT_FAILED
    assert [client.get_run(r).info.status for r in runs.run_ids] == ["FAILED", "FAILED"]


def test_the_ending_cannot_be_interrupted(client, experiment_id):
    def build() -> bool:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "Ctrl-C is live"
        return True

    runs = Recorded(client, experiment_id, build)
    lifecycle.live(runs, client, Redactor())
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


@pytest.mark.parametrize(
    ("code", "found", "rejected", "expected"),
    [
        (EXIT_OK, {}, False, EXIT_OK),
        (EXIT_OK, {}, True, EXIT_REJECTED),
        (EXIT_OK, {"problems": "end the run: store away"}, False, EXIT_FAILED),
        (EXIT_OK, {"problems": "end the run: store away"}, True, EXIT_FAILED),
        (130, {"problems": "upload the log: store away"}, False, 130),
        (EXIT_FAILED, {}, True, EXIT_FAILED),
    ],
)
def test_the_exit_code_once_the_run_is_ended(code, found, rejected, expected):
    assert lifecycle.exit_code(code, found, rejected) == expected


def test_only_a_running_run_is_adopted(client, experiment_id):
    from luigiflow.config import ConfigError

    running = client.create_run(experiment_id).info.run_id
    assert lifecycle._adoptable(client, running).run_id == running
    ended = client.create_run(experiment_id).info.run_id
    client.set_terminated(ended, "FINISHED")
    with pytest.raises(ConfigError, match="is FINISHED: only a RUNNING run is adopted"):
        lifecycle._adoptable(client, ended)
