"""How a run ends: every step within one deadline, and the ending goes on after a failure."""

from __future__ import annotations

import time

from luigiflow.ending import Ending


def test_the_ending_is_bounded_and_goes_on_after_a_failure():
    ending = Ending(seconds=0.5)
    began = time.monotonic()
    assert ending.step("read the records", lambda: {"a": 1}) == {"a": 1}
    assert ending.step("write the report", lambda: 1 / 0) is None
    assert ending.step("upload the log", lambda: time.sleep(30)) is None
    assert ending.step("settle tasks", lambda: "skipped after a timeout") is None
    assert ending.step("end the run", lambda: "ended", always=True) == "ended"
    assert time.monotonic() - began < 10
    assert ending.problems == [
        "could not write the report (ZeroDivisionError: division by zero)",
        "could not upload the log within the deadline",
    ]
