"""Fixtures: one PostgreSQL server per session, a fresh database per test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fix_db import Server, start_server

_server: Server | None = None
ROOT = Path(__file__).resolve().parent.parent


def get_server() -> Server:
    global _server
    if _server is None:
        _server = start_server()
    return _server


def pytest_report_header(config: pytest.Config) -> list[str]:
    srv = get_server()
    v = srv.versions()
    return [
        f"pgretention test server ({srv.kind}): PostgreSQL {v.get('server')}, "
        f"pg_partman {v.get('pg_partman')}, pg_cron {v.get('pg_cron')}, pgcrypto {v.get('pgcrypto')}"
    ]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()


class DB:
    """A database of one test: its DSN and helpers."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = server.conninfo(name)

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        kw.setdefault("autocommit", True)
        return psycopg.connect(self.dsn, **kw)

    def dsn_as(self, user: str) -> str:
        return self.server.conninfo(self.name, user=user)

    def one(self, query: Any, params: Any = None) -> Any:
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]

    def all(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, query: Any, params: Any = None) -> None:
        with self.connect() as conn:
            conn.execute(query, params)

    def cli(self, *args: str, dsn: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the real console script against this database."""
        cmd = [sys.executable, "-m", "pgretention", "--dsn", dsn or self.dsn, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        if check and res.returncode != 0:
            raise AssertionError(f"{cmd} failed ({res.returncode}): {res.stderr}")
        return res


@pytest.fixture(scope="session")
def server() -> Server:
    return get_server()


@pytest.fixture
def db(server: Server) -> Iterator[DB]:
    name = server.create_database()
    try:
        yield DB(server, name)
    finally:
        _remove_cron_jobs(server, name)
        server.drop_database(name)


@pytest.fixture
def installed(db: DB) -> DB:
    from pgretention import installer

    installer.install(db.dsn, with_cron=False)
    return db


def _remove_cron_jobs(server: Server, dbname: str) -> None:
    try:
        with server.admin() as conn:
            if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:  # type: ignore[index]
                conn.execute(
                    "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s", [dbname]
                )
    except psycopg.Error:
        pass
