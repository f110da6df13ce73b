"""Connection errors are one line with an exit code; each role can do its job and no more; an
unprivileged role's search_path never reaches into pgretention's code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from pgretention.cluster import free_port
from tests.fix_db import DB, ROOT


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgretention", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("pgretention: error: ")
    return lines[0]


def test_unreachable_server(db: DB) -> None:
    res = _run("--dsn", f"host=127.0.0.1 port={free_port()} dbname=x connect_timeout=3", "version")
    assert res.returncode == 2
    assert "cannot connect" in _one_line_error(res)


def test_malformed_dsn() -> None:
    res = _run("--dsn", "host=localhost port", "version")
    assert res.returncode == 6
    assert "invalid DSN" in _one_line_error(res)


def test_wrong_password(db: DB) -> None:
    if db.server.cluster is None:
        pytest.skip("needs the local cluster's password authentication over TCP")
    res = _run("--dsn", db.server.cluster.tcp_conninfo(db.name, password="wrong"), "version")
    assert res.returncode == 2
    assert "password authentication failed" in _one_line_error(res)


def test_pg_environment_and_service_file(db: DB, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No --dsn: libpq's PGSERVICEFILE / PGSERVICE and PG* variables select the database."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(db.dsn)
    svc = tmp_path / "pg_service.conf"
    svc.write_text("[retention]\n" + "".join(f"{k}={v}\n" for k, v in params.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGSERVICEFILE=str(svc), PGSERVICE="retention")
    res = _run("--format", "json", "version", env=env)
    assert res.returncode == 0, res.stderr
    assert '"server"' in res.stdout


INSTALL_ROLES = ("pgretention_admin", "pgretention_operator", "pgretention_auditor")


@pytest.fixture
def plain_user(db: DB) -> Iterator[str]:
    """A login role with CREATE on the test's database and nothing else (no CREATEROLE), with the
    three pgretention roles present (as after any install in the cluster), whatever ran before.
    Afterwards the role and what it owns are gone, and roles made here are dropped again."""
    made = [r for r in INSTALL_ROLES if db.one("SELECT to_regrole(%s)", [r]) is None]
    for role in made:
        db.execute(f"CREATE ROLE {role} NOLOGIN")
    db.execute("CREATE ROLE plain_user LOGIN; GRANT CREATE ON DATABASE " + db.name + " TO plain_user")
    try:
        yield "plain_user"
    finally:
        db.execute("DROP OWNED BY plain_user CASCADE")
        db.execute(f"REVOKE ALL ON DATABASE {db.name} FROM plain_user; DROP ROLE plain_user")
        for role in made:
            db.execute(f"DROP OWNED BY {role} CASCADE; DROP ROLE {role}")
        assert db.one("SELECT to_regrole('plain_user')") is None


@pytest.mark.partman(4)
def test_missing_privilege_is_one_line(db: DB, plain_user: str) -> None:
    """pg_partman 4.x is superuser-only: a role with only CREATE on the database is refused, in one line."""
    res = _run("--dsn", db.dsn_as(plain_user), "install", "--no-cron")
    assert res.returncode == 3
    assert "cannot create extension pg_partman" in _one_line_error(res)
    assert db.one("SELECT to_regnamespace('pgretention')") is None


def test_missing_createrole_is_one_line(db: DB, plain_user: str) -> None:
    """Without CREATEROLE, install cannot make its roles where they are missing: refused, in one line."""
    db.execute("CREATE ROLE other_installer LOGIN NOCREATEROLE; GRANT CREATE ON DATABASE " + db.name + " TO other_installer")
    try:
        with db.connect() as conn:
            conn.execute("BEGIN")
            # the roles are cluster-wide and other tests' installs made them: hide one for this check
            conn.execute("ALTER ROLE pgretention_auditor RENAME TO pgretention_auditor_hidden")
            conn.execute("COMMIT")
        try:
            res = _run("--dsn", db.dsn_as("other_installer"), "install", "--no-cron")
        finally:
            db.execute("ALTER ROLE pgretention_auditor_hidden RENAME TO pgretention_auditor")
        assert res.returncode == 3
        assert "cannot create role pgretention_auditor" in _one_line_error(res)
        assert db.one("SELECT to_regnamespace('pgretention')") is None
    finally:
        db.execute(f"DROP OWNED BY other_installer CASCADE; REVOKE ALL ON DATABASE {db.name} FROM other_installer;"
                   " DROP ROLE other_installer")


@pytest.mark.partman(5)
def test_non_superuser_install_with_partman_5(db: DB, plain_user: str) -> None:
    """pg_partman 5.x needs no superuser: a role with CREATE on the database installs and owns
    pgretention, acts with its own rights only (its tables yes, another role's table no), a superuser
    does not replay into its schema, and it uninstalls cleanly (docs/install.md, "Who installs")."""
    as_user = db.dsn_as(plain_user)
    res = _run("--dsn", as_user, "install", "--no-cron")
    assert res.returncode == 0, res.stderr
    assert "not a superuser" in res.stdout + res.stderr
    assert db.one("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgretention'") == plain_user
    assert db.one("SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_partman'") == plain_user
    with psycopg.connect(as_user, autocommit=True) as conn:
        # a table of its own, in a schema of its own: created, partitioned, purged
        conn.execute("CREATE SCHEMA own")
        conn.execute("SELECT pgretention.table_create('own.cdr', 'id bigint, started_at timestamptz NOT NULL',"
                     " 'started_at', '1 day', '{\"all\": {\"drop_after\": \"2 days\"}}',"
                     " p_start => now() - interval '5 days')")
        conn.execute("INSERT INTO own.cdr SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 96) g")
        conn.execute("CALL pgretention.run()")
        assert conn.execute("SELECT count(*) FROM own.cdr WHERE started_at < now() - interval '3 days'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM own.cdr").fetchone() != (0,)
    # another role's table is out of its reach
    db.execute("CREATE TABLE public.their_cdr (id bigint, started_at timestamptz NOT NULL)")
    db.execute("INSERT INTO public.their_cdr VALUES (1, now() - interval '400 days')")
    with psycopg.connect(as_user, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CALL pgretention.adopt('public.their_cdr', 'started_at', '90 days')")
    assert db.one("SELECT count(*) FROM public.their_cdr") == 1
    # a superuser's install or upgrade would replay as a superuser into a schema the role owns: refused
    res = _run("--dsn", db.dsn, "upgrade")
    assert res.returncode == 3
    assert f"owned by role {plain_user}" in _one_line_error(res)
    # pg_cron's job lives where cron.database_name says, a setting only pg_read_all_settings reads
    res = _run("--dsn", as_user, "uninstall", "--yes", "--keep-tables")
    assert res.returncode == 3
    assert "needs pg_read_all_settings" in _one_line_error(res)
    db.execute(f"GRANT pg_read_all_settings TO {plain_user}")
    res = _run("--dsn", as_user, "uninstall", "--yes", "--keep-tables")
    assert res.returncode == 0, res.stderr
    assert db.one("SELECT to_regnamespace('pgretention')") is None


def test_roles(installed: DB) -> None:
    """Operator cannot change policy; auditor cannot purge or change anything; only the owner reads keys."""
    installed.execute(
        "DO $$BEGIN"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alice') THEN CREATE ROLE alice LOGIN; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bob') THEN CREATE ROLE bob LOGIN; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'carol') THEN CREATE ROLE carol LOGIN; END IF;"
        " END$$;"
        "GRANT pgretention_admin TO alice; GRANT pgretention_operator TO bob; GRANT pgretention_auditor TO carol;"
        # the admin creates managed tables where it may create tables (and owns them)
        "GRANT CREATE ON SCHEMA public TO alice"
    )
    try:
        with psycopg.connect(installed.dsn_as("alice"), autocommit=True) as alice:
            alice.execute(
                "SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL',"
                " 'started_at', '1 day', p_classes => '{\"default\": {\"drop_after\": \"13 months\"}}')"
            )
            alice.execute("SELECT pgretention.setting_set('batch_size', '2000')")
        with psycopg.connect(installed.dsn_as("bob"), autocommit=True) as bob:
            bob.execute("CALL pgretention.run()")
            bob.execute("CALL pgretention.run(p_table => 'public.cdr')")  # one table: its name checked as bob
            assert bob.execute("SELECT count(*) FROM pgretention.status()").fetchone()[0] >= 1  # type: ignore[index]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("SELECT pgretention.setting_set('batch_size', '1')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("SELECT pgretention.class_add('public.cdr', 'x', '1 month')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("SELECT * FROM pgretention.audit_log")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("DELETE FROM pgretention.managed_table")
        with psycopg.connect(installed.dsn_as("carol"), autocommit=True) as carol:
            assert carol.execute("SELECT ok FROM pgretention.audit_verify()").fetchone()[0] is True  # type: ignore[index]
            assert carol.execute("SELECT count(*) FROM pgretention.audit_log").fetchone()[0] >= 2  # type: ignore[index]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                carol.execute("CALL pgretention.run()")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                carol.execute("UPDATE pgretention.audit_log SET outcome = 'x'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                carol.execute("SELECT pgretention.setting_set('batch_size', '1')")
        for user in ("alice", "bob", "carol"):
            with psycopg.connect(installed.dsn_as(user), autocommit=True) as c, pytest.raises(
                psycopg.errors.InsufficientPrivilege
            ):
                c.execute("SELECT * FROM pgretention.installation")
        assert installed.one("SELECT value FROM pgretention.setting WHERE name = 'batch_size'") == "2000"
        assert installed.one("SELECT count(*) FROM pgretention.audit_log WHERE session_role = 'alice'") == 2
    finally:
        installed.execute("DROP OWNED BY alice, bob, carol; DROP ROLE alice, bob, carol")


def test_search_path_attack_by_unprivileged_role(installed: DB) -> None:
    """Look-alike functions and tables in the attacker's schema never run inside pgretention code."""
    db = installed
    db.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN"
               " CREATE ROLE mallory LOGIN; END IF; END$$;"
               "CREATE SCHEMA evil AUTHORIZATION mallory; GRANT pgretention_operator TO mallory;"
               "CREATE TABLE public.loot (what text); GRANT INSERT ON public.loot TO mallory")
    try:
        db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz', 'started_at',"
                   " '1 day', '{\"all\": {\"drop_after\": \"1 day\"}}', p_start => now() - interval '5 days')")
        with psycopg.connect(db.dsn_as("mallory"), autocommit=True) as m:
            for name, args, ret in [("format", "text, VARIADIC text[]", "text"), ("now", "", "timestamptz"),
                                    ("set_config", "text, text, boolean", "text"), ("hashtext", "text", "int"),
                                    ("quote_ident", "text", "text"), ("to_regclass", "text", "regclass")]:
                m.execute(f"CREATE FUNCTION evil.{name}({args}) RETURNS {ret} LANGUAGE plpgsql AS"  # noqa: S608 - fixed names
                          " $f$BEGIN INSERT INTO public.loot VALUES ('hijacked'); RETURN NULL; END$f$")
            m.execute("CREATE TABLE evil.managed_table (id int); CREATE TABLE evil.setting (name text, value text)")
            m.execute("SET search_path = evil, public, pg_catalog")
            m.execute("CALL pgretention.run()")
            m.execute("SELECT * FROM pgretention.status()")
            m.execute("SELECT * FROM pgretention.plan()")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("SELECT pgretention.setting_set('lock_timeout', '1h')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("UPDATE pgretention.audit_log SET outcome = 'x'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("SELECT key FROM pgretention.anon_key")
        assert db.one("SELECT count(*) FROM public.loot") == 0
        assert db.one("SELECT value FROM pgretention.setting WHERE name = 'lock_timeout'") == "20ms"
        assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") >= 3
    finally:
        db.execute("DROP SCHEMA evil CASCADE; DROP TABLE public.loot; DROP OWNED BY mallory; DROP ROLE mallory")
