"""One attempt at a task: its time limit holds whatever the task's code catches."""

from __future__ import annotations

import time

import pytest

from luigiflow.attempt import TaskTimeout, time_limit


def test_a_timeout_is_not_swallowed_by_code_that_catches_every_exception():
    began = time.monotonic()
    with pytest.raises(TaskTimeout, match=r"T timed out after 0\.2 s"), time_limit(0.2, "T"):
        try:  # what scikit-learn does with a failing fold
            time.sleep(5)
        except Exception:
            print("swallowed")
    assert time.monotonic() - began < 2
