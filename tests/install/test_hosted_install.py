"""Install without a superuser, as on hosted PostgreSQL: the provider's privileged role has created
pg_partman and pgcrypto; the DBA's role may create roles but is neither a superuser nor the owner of
the database. ``install --check`` lists exactly what that role lacks, each with its grant; once the
grants are given, the role installs, manages an application's table and purges it, and the
application's code on that table runs as the application's owner, not as the installing role."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fix_db import DB, ROOT

DBA = "hosted_dba"
APP = "hosted_app"


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgretention", "--dsn", dsn, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture
def hosted(db: DB) -> Iterator[DB]:
    """The provider's side: extensions created by the superuser, a CREATEROLE login for the DBA, an
    application role owning schema app with a partitioned table."""
    db.execute("CREATE SCHEMA IF NOT EXISTS partman; CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;"
               " CREATE EXTENSION IF NOT EXISTS pgcrypto")
    db.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE; CREATE ROLE {} LOGIN").format(
        sql.Identifier(DBA), sql.Identifier(APP)))
    db.execute(sql.SQL("CREATE SCHEMA app AUTHORIZATION {}").format(sql.Identifier(APP)))
    with psycopg.connect(db.dsn_as(APP), autocommit=True) as app:
        app.execute("CREATE TABLE app.events (id bigint, at timestamptz NOT NULL, who text) PARTITION BY RANGE (at)")
        app.execute("CREATE TABLE app.fired (who text)")
        app.execute("CREATE FUNCTION app.log_delete() RETURNS trigger LANGUAGE plpgsql AS $f$"
                    " BEGIN INSERT INTO app.fired VALUES (current_user); RETURN OLD; END $f$")
        app.execute("CREATE TRIGGER log_delete BEFORE DELETE ON app.events FOR EACH ROW EXECUTE FUNCTION app.log_delete()")
    try:
        yield db
    finally:
        for role in (DBA, APP):
            db.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        db.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(db.name), sql.Identifier(DBA)))
        db.execute(sql.SQL("DROP ROLE {}; DROP ROLE {}").format(sql.Identifier(DBA), sql.Identifier(APP)))


def _missing(db: DB) -> tuple[int, list[dict[str, str]]]:
    res = _cli(db.dsn_as(DBA), "--format", "json", "install", "--check", "--for-table", "app.events")
    assert res.returncode in (0, 3) and res.stdout.startswith("["), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_preflight_lists_the_grants_and_the_role_then_installs_and_purges(hosted: DB) -> None:
    db = hosted
    before = db.one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgretention%'")
    rc, missing = _missing(db)
    assert rc == 3
    whats = " | ".join(m["missing"] for m in missing)
    assert f"CREATE on database {db.name}" in whats
    assert "part_config" in whats  # pg_partman created by the provider: its configuration table
    assert f"acting as {APP}, the owner of app.events" in whats
    # the check changed nothing
    assert db.one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgretention%'") == before
    # the provider (superuser, database owner) gives exactly what was listed
    for m in missing:
        db.execute(m["fix"])  # type: ignore[arg-type]
    rc, missing = _missing(db)
    assert (rc, missing) == (0, [])

    res = _cli(db.dsn_as(DBA), "install", "--no-cron")
    assert res.returncode == 0, res.stderr
    assert db.one("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgretention'") == DBA
    with psycopg.connect(db.dsn_as(DBA), autocommit=True) as dba:
        dba.execute("SELECT pgretention.table_manage('app.events', 'at', '1 day', '{\"d\": {\"drop_after\": \"7 days\"}}',"
                    " p_start => now() - interval '5 days')")
        with psycopg.connect(db.dsn_as(APP), autocommit=True) as app:
            app.execute("INSERT INTO app.events SELECT g, now() - interval '20 days' - g * interval '1 minute', 'x'"
                        " FROM generate_series(1, 30) g")
            app.execute("INSERT INTO app.events SELECT g, now() - g * interval '1 hour', 'y' FROM generate_series(1, 30) g")
        dba.execute("CALL pgretention.run(p_runner => 'test')")
    assert db.one("SELECT count(*) FROM app.events WHERE at < now() - interval '7 days'") == 0
    assert db.one("SELECT count(*) FROM app.events") == 30
    assert db.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1") in ("ok", "partial")
    # the application's trigger ran as the application's owner, never as the installing role
    assert db.all("SELECT DISTINCT who FROM app.fired") == [(APP,)]
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'default.purge'") >= 1
