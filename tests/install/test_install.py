"""Installer: install into a lived-in database, idempotence, uninstall, upgrade, roles, errors."""

from __future__ import annotations

import psycopg
import pytest

from pgretention import installer
from pgretention.errors import MissingExtension, NotInstalled
from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB

LIVED_IN = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO public.customers VALUES (1, 'a'), (2, 'b');
CREATE SCHEMA billing;
CREATE TABLE billing.events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE FUNCTION public.app_helper() RETURNS int LANGUAGE sql AS 'SELECT 1';
"""


def _lived_in_with_partman(db: DB) -> None:
    """A database whose owner already uses pg_partman for a table of their own."""
    db.execute(LIVED_IN)
    db.execute("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman")
    major = int(db.one("SELECT split_part(extversion, '.', 1) FROM pg_extension WHERE extname = 'pg_partman'"))
    if major >= 5:
        db.execute("SELECT partman.create_parent('billing.events', 'at', '1 day')")
    else:
        db.execute("SELECT partman.create_parent('billing.events', 'at', 'native', '1 day')")


def test_install_into_lived_in_database_touches_nothing_of_theirs(db: DB) -> None:
    """Existing tables, a foreign partman set and foreign pg_cron jobs survive install and uninstall."""
    _lived_in_with_partman(db)
    with db.server.admin() as adm:
        adm.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'their-job'")
        adm.execute("SELECT cron.schedule('their-job', '0 4 * * *', 'SELECT 1')")
    with db.connect() as conn:
        before = snapshot(conn)
    parts_before = db.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'billing.events'::regclass")
    config_before = db.all("SELECT parent_table, partition_interval, premake FROM partman.part_config")

    rep = installer.install(db.dsn)
    assert "created extension pg_partman in schema partman" not in rep.actions
    assert db.one("SELECT partman_schema FROM pgretention.installation") == "partman"
    assert db.all("SELECT parent_table, partition_interval, premake FROM partman.part_config") == config_before
    assert db.one("SELECT count(*) FROM public.customers") == 2
    with db.server.admin() as adm:
        jobs = dict(adm.execute("SELECT jobname, schedule FROM cron.job WHERE jobname IN ('their-job', %s)",
                                [f"pgretention:{db.name}"]).fetchall())
    assert jobs == {"their-job": "0 4 * * *", f"pgretention:{db.name}": "7 * * * *"}

    installer.uninstall(db.dsn)
    with db.connect() as conn:
        after = snapshot(conn)
    assert diff(before, after) == {}
    assert db.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'billing.events'::regclass") == parts_before
    with db.server.admin() as adm:
        names = [r[0] for r in adm.execute("SELECT jobname FROM cron.job").fetchall()]
        assert "their-job" in names and f"pgretention:{db.name}" not in names
        adm.execute("SELECT cron.unschedule('their-job')")


def test_install_twice_changes_nothing(db: DB) -> None:
    installer.install(db.dsn)
    with db.connect() as conn:
        first = snapshot(conn)
    audit_rows = db.one("SELECT count(*) FROM pgretention.audit_log")
    rep = installer.install(db.dsn)
    with db.connect() as conn:
        second = snapshot(conn)
    assert rep.actions == []
    assert "unchanged" in rep.cron
    assert diff(first, second) == {}
    assert db.one("SELECT count(*) FROM pgretention.audit_log") == audit_rows
    assert db.one("SELECT action FROM pgretention.audit_log ORDER BY id LIMIT 1") == "install"


def test_uninstall_of_clean_database_restores_catalog(db: DB) -> None:
    with db.connect() as conn:
        before = snapshot(conn)
    installer.install(db.dsn)
    assert db.one("SELECT count(*) FROM pg_extension WHERE extname IN ('pg_partman', 'pgcrypto')") == 2
    rep = installer.uninstall(db.dsn)
    assert "dropped extension pg_partman" in rep.actions
    with db.connect() as conn:
        assert diff(before, snapshot(conn)) == {}


def test_upgrade_from_first_revision_equals_fresh_install(server, db: DB) -> None:  # type: ignore[no-untyped-def]
    installer.install(db.dsn, with_cron=False)
    other = server.create_database()
    try:
        other_dsn = server.conninfo(other)
        installer.install(other_dsn, with_cron=False, _revision="0001")
        with psycopg.connect(other_dsn) as c:
            assert c.execute("SELECT version_num FROM pgretention.alembic_version").fetchone()[0] == "0001"
        rep = installer.install(other_dsn, with_cron=False, upgrade_only=True)
        assert rep.revision == installer.head_revision()
        with db.connect() as a, psycopg.connect(other_dsn) as b:
            sa = snapshot(a, )
            sb = snapshot(b)
        assert diff(sa, sb) == {}
    finally:
        server.drop_database(other)


def test_upgrade_refuses_when_not_installed(db: DB) -> None:
    with pytest.raises(NotInstalled, match="not installed in database"):
        installer.install(db.dsn, upgrade_only=True)
    assert db.one("SELECT to_regnamespace('pgretention')") is None


def test_missing_extension_is_named(db: DB) -> None:
    with db.connect() as conn, pytest.raises(MissingExtension, match="pg_nosuch is not available"):
        installer._ensure_extension(conn, "pg_nosuch", "x", installer.Report(), [], [])
    assert db.one("SELECT to_regnamespace('x')") is None


def test_uninstall_refuses_with_managed_tables(installed: DB) -> None:
    installed.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL',"
        " 'started_at', '1 day', p_classes => '{\"default\": {\"drop_after\": \"13 months\"}}')"
    )
    res = installed.cli("uninstall", "--yes")
    assert res.returncode != 0
    assert "managed tables exist: public.cdr" in res.stderr
    assert installed.one("SELECT count(*) FROM pgretention.managed_table") == 1
    res = installed.cli("uninstall", "--yes", "--keep-tables")
    assert res.returncode == 0, res.stderr
    assert installed.one("SELECT to_regnamespace('pgretention')") is None
    assert installed.one("SELECT to_regclass('public.cdr')") is not None
    assert installed.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.cdr'::regclass") >= 1


def test_audit_log_is_append_only_and_chained(installed: DB) -> None:
    installed.execute("SELECT pgretention.setting_set('batch_size', '1000')")
    assert installed.one("SELECT ok FROM pgretention.audit_verify()") is True
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        installed.execute("UPDATE pgretention.audit_log SET outcome = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        installed.execute("DELETE FROM pgretention.audit_log")
    # A superuser who disables the guard and rewrites history is caught by verify.
    installed.execute(
        "ALTER TABLE pgretention.audit_log DISABLE TRIGGER audit_log_append_only;"
        "UPDATE pgretention.audit_log SET details = '{}' WHERE action = 'setting.change';"
        "ALTER TABLE pgretention.audit_log ENABLE TRIGGER audit_log_append_only"
    )
    bad = installed.all("SELECT ok, first_broken_id, reason FROM pgretention.audit_verify()")[0]
    changed = installed.one("SELECT id FROM pgretention.audit_log WHERE action = 'setting.change'")
    assert bad == (False, changed, "content does not match its hash")
