"""The tests' world: the server, a database per test, pgretention installed, the engines' runs.

Which PostgreSQL the tests run against, in this order:

1. ``PGRETENTION_TEST_DSN``: an existing server (the DSN's database is used for administration);
2. testcontainers, when a Docker engine answers (image built from ``docker/Dockerfile``);
3. a local throwaway cluster started from the distribution's binaries (``pgretention.cluster``).

The server (:class:`pgretention.cluster.Server`, shared with the benchmarks) starts once per
session (fixture ``server``). Each test gets a database of its own:
``db`` (empty), ``installed`` (pgretention installed, no pg_cron job) or ``engine`` (installed, and
every session of the test simulates: reference times other than the clock allowed, so that a test
can simulate the passing of time; see :func:`simulate`).
:func:`run` and :func:`run_entities` call the partition and the entity engine and return what
they recorded in ``pgretention.job_run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgretention.cluster import Server

ROOT = Path(__file__).resolve().parent.parent


# -- which server --------------------------------------------------------------------------------------
def docker_answers() -> bool:
    if os.environ.get("PGRETENTION_NO_DOCKER"):
        return False
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
            return True
        finally:
            client.close()
    except Exception:
        return False


def start_server() -> Server:
    srv = _start_server()
    try:
        with srv.admin() as conn:
            cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]  # type: ignore[index]
            current = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            if cron_db == current:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    except psycopg.Error:
        pass
    return srv


def _start_server() -> Server:
    dsn = os.environ.get("PGRETENTION_TEST_DSN")
    if dsn:
        return Server(dsn)
    if docker_answers():
        from testcontainers.core.image import DockerImage
        from testcontainers.postgres import PostgresContainer

        major = os.environ.get("PGRETENTION_PG_MAJOR", "15")
        tag = f"pgretention-test:{major}"
        DockerImage(path=str(ROOT / "docker"), tag=tag, buildargs={"PG_MAJOR": major}).build()
        container = PostgresContainer(image=tag, username="postgres", password="pgretention", dbname="postgres")
        container.start()
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5432)
        return Server(f"host={host} port={port} user=postgres password=pgretention dbname=postgres",
                      kind="testcontainers", on_stop=container.stop)
    return Server.local()


# -- the session's server and a database per test ------------------------------------------------------
_server: Server | None = None


def get_server() -> Server:
    global _server
    if _server is None:
        _server = start_server()
    return _server


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()


class DB:
    """A database of one test: its DSN and helpers."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = server.conninfo(name)
        self.simulate = False  # every session of the installing role calls simulation_enable()

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        kw.setdefault("autocommit", True)
        conn = psycopg.connect(self.dsn, **kw)
        if self.simulate:
            conn.execute("SELECT pgretention.simulation_enable()")
            if not conn.autocommit:
                conn.commit()
        return conn

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
        env = {**os.environ, "PGRETENTION_SIMULATE": "1"} if self.simulate and dsn is None else None
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
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


def simulate(db: DB) -> DB:
    """From now on every session of the test's installing role (``db.connect``, ``db.cli``) allows
    reference times other than the clock: it calls ``pgretention.simulation_enable()``, which only
    the installing role may. Sessions of other roles never simulate."""
    db.simulate = True
    return db


@pytest.fixture
def engine(installed: DB) -> DB:
    """pgretention installed, with simulated time in every session of the installing role."""
    return simulate(installed)


def _remove_cron_jobs(server: Server, dbname: str) -> None:
    try:
        with server.admin() as conn:
            if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:  # type: ignore[index]
                conn.execute(
                    "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s", [dbname]
                )
    except psycopg.Error:
        pass


# -- the engines' runs ---------------------------------------------------------------------------------
def run(db: DB, at: datetime | None = None, table: str | None = None) -> dict[str, Any]:
    """``CALL pgretention.run()`` at reference time ``at``: the run's status and summary."""
    return _job(db, "CALL pgretention.run(p_now => %s, p_table => %s, p_runner => 'test')", [at, table])


def run_entities(db: DB, at: datetime | None = None, rule: str | None = None) -> dict[str, Any]:
    """``CALL pgretention.entity_run()`` at reference time ``at``: the run's status and summary."""
    return _job(db, "CALL pgretention.entity_run(p_now => %s, p_rule => %s, p_runner => 'test')", [at, rule])


def _job(db: DB, call: str, params: list[Any]) -> dict[str, Any]:
    """Run ``call`` and return the job_run it recorded: its status, with its summary's keys."""
    with db.connect() as conn:
        conn.execute(call, params)
        row = conn.execute("SELECT status, summary, message FROM pgretention.job_run ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    return {"status": row[0], "message": row[2], **row[1]}


def last_run(db: DB) -> tuple[str, dict[str, Any]]:
    """Status and summary of the last run of the partition engine (the last job_run with totals)."""
    row = db.all("SELECT status, summary FROM pgretention.job_run WHERE summary ? 'totals' ORDER BY id DESC LIMIT 1")[0]
    return row[0], row[1]
