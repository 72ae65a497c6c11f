"""The servers the tests and the benchmark start are used only once they answer."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ServerDidNotAnswer, wait_for
from stack import postgres_server

pytestmark = pytest.mark.slow

ROWS = 200_000  # about 30 MB of log to replay after a crash: logins refused for ~0.4 s


def test_postgres_takes_a_login_as_soon_as_it_is_started_even_after_a_crash():
    with postgres_server() as server:
        with server.connect() as connection:
            connection.execute("CREATE TABLE t (n int, padding text)")
        for round in range(1, 6):
            with server.connect() as connection:
                connection.execute(
                    "INSERT INTO t SELECT n, repeat('x', 100) FROM generate_series(1, %s) n",
                    (ROWS,),
                )
            server.stop("immediate")  # a crash: the next start replays the log first
            server.start()
            with server.connect() as connection:  # at once, a single try
                (count,) = connection.execute("SELECT count(*) FROM t").fetchone()
            assert count == ROWS * round


def test_a_server_that_dies_while_starting_fails_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.exit('no such store: bad.db')"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    with pytest.raises(ServerDidNotAnswer, match=r"(?s)exited.*no such store: bad\.db"):
        wait_for("http://127.0.0.1:9/health", process, timeout=60, log=log)
