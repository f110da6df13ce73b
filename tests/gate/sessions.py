"""Overlapping sessions for deterministic concurrency tests: a statement run in a thread on its own
connection, a long reader holding its locks, and waits on observable states (a lock wait in
``pg_locks``) instead of blind sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from tests.fix_db import DB


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``pred`` (every 20 ms) until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def waits_on_lock(db: DB, pid: int, relation: str | None = None) -> bool:
    """Is backend ``pid`` waiting for a lock (on ``relation``, when given)?"""
    return bool(db.one("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND NOT granted"
                       " AND (%s::text IS NULL OR relation = to_regclass(%s)))", [pid, relation, relation]))


class Session:
    """One statement on a connection of its own, run in a thread; ``pid`` is its backend."""

    def __init__(self, db: DB, statement: str, params: Any = None) -> None:
        self.conn = db.connect()
        self.pid: int = self.conn.info.backend_pid
        self.statement, self.params = statement, params
        self.rows: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        try:
            cur = self.conn.execute(self.statement, self.params)
            self.rows = cur.fetchall() if cur.description else []
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.done.set()

    def start(self) -> Session:
        self.thread.start()
        return self

    def finished_or_waiting(self, db: DB) -> bool:
        """Done, or blocked on a lock (a hold_set that waits for the destructive act is fine)."""
        return self.done.is_set() or waits_on_lock(db, self.pid)

    def result(self, timeout: float = 300.0) -> list[tuple[Any, ...]]:
        self.thread.join(timeout)
        try:
            if self.thread.is_alive():
                raise AssertionError(f"statement still running after {timeout:.0f} s: {self.statement}")
            if self.error is not None:
                raise self.error
            return self.rows
        finally:
            if not self.thread.is_alive():
                self.conn.close()


@contextmanager
def reader(db: DB, table: str) -> Iterator[psycopg.Connection[Any]]:
    """A long report: a transaction that has read ``table`` (ACCESS SHARE on it and its partitions)
    until the block ends. The connection is yielded: statements run in the same transaction."""
    conn = db.connect()
    try:
        conn.execute("BEGIN")
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))  # test-owned name
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()
