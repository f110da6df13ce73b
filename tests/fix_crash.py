"""Crashes on purpose: a statement whose backend is killed at a random point, the server stopped at once.

A crash trial starts the operation in a :class:`Victim` (its own session, in a thread), kills its
backend with ``pg_terminate_backend`` after a delay drawn from the trial's seed, lets the next run
(or the documented way to resume) finish the work, and checks the outcome exactly. The engines'
folders hold their own trials (``test_crash.py``): two or three seeds in the default suite, 30
with ``-m slow`` (``make test-slow``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.fix_db import DB


class Victim:
    """A statement running in its own session, in a thread, whose backend can be killed."""

    def __init__(self, db: DB, statement: str, params: list[Any] | None = None) -> None:
        self.db, self.statement, self.params = db, statement, params
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        try:
            with self.db.connect() as conn:
                self.pid = conn.info.backend_pid
                self.started.set()
                conn.execute(self.statement, self.params)
                self.finished = True
        except psycopg.Error as exc:
            self.error = exc
        finally:
            self.started.set()

    def start(self) -> Victim:
        self.thread.start()
        assert self.started.wait(30)
        return self

    def kill_after(self, delay: float) -> bool:
        """Terminate the backend after ``delay`` seconds; True when it was still working."""
        time.sleep(delay)
        killed = False
        if self.pid is not None and not self.finished:
            killed = bool(self.db.one("SELECT pg_terminate_backend(%s)", [self.pid]))
        self.join()
        return killed and not self.finished

    def join(self) -> None:
        """Wait for the statement's thread to end (the statement finished, failed or was killed)."""
        self.thread.join(60)
        assert not self.thread.is_alive()


def immediate_stop_during(db: DB, victim: Victim, ready: Callable[[], bool], extra: float) -> None:
    """Stop the server at once while ``victim`` works (after ``ready()`` holds, plus ``extra`` s)."""
    cluster = db.server.cluster
    assert cluster is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not victim.finished and not ready():
        time.sleep(0.01)
    time.sleep(extra)
    assert not victim.finished, "the operation ended before the server was stopped"
    cluster.restart(mode="immediate")
    victim.thread.join(60)
    assert not victim.thread.is_alive() and victim.error is not None


def needs_local_cluster(db: DB) -> None:
    if db.server.cluster is None:
        pytest.skip("needs the local throwaway cluster to stop it")


def durable_commits(db: DB) -> None:
    """Commits of this database survive the crash from now on, the ones made so far included.

    The throwaway cluster runs with ``synchronous_commit = off`` for speed: an immediate stop may
    then lose the last commits (a consistent prefix survives), which would make the expected counts
    of a test depend on timing. Production servers commit synchronously; so do these sessions.
    """
    db.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(db.name)))
    db.execute("CHECKPOINT")
