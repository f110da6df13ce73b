"""The owner's executor (sql/core/exec.sql): statements on a user's table run with its owner's rights.

The table owner plants code that escalates when it runs with superuser rights (a trigger, a check
constraint's function) and then tries to reach or change its executor; every test asserts that no
role became superuser and that the executor stayed what pgretention wrote.
"""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.security.fix_roles import Actors, attempt, payload, require


def _owner_table(actors: Actors) -> None:
    """``app.t`` owned by appowner, 10 rows, with a BEFORE DELETE trigger carrying the payload."""
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.t (id int PRIMARY KEY, v text)")
        own.execute("INSERT INTO app.t SELECT g, 'v' || g FROM generate_series(1, 10) g")
        own.execute("CREATE FUNCTION app.esc() RETURNS trigger LANGUAGE plpgsql AS $f$"
                    + payload("session_user", "OLD") + "$f$")
        own.execute("CREATE TRIGGER esc BEFORE DELETE ON app.t FOR EACH ROW EXECUTE FUNCTION app.esc()")


def _executor_name(actors: Actors) -> str:
    return str(actors.db.one("SELECT format('pgretention_exec.owner_%%s', %s::regrole::oid)", [actors["appowner"]]))


def test_statement_runs_with_the_owners_rights(actors: Actors) -> None:
    """A DELETE through _as_owner fires the owner's trigger as the owner: the rows go, nobody
    becomes superuser, and the executor belongs to the owner."""
    _owner_table(actors)
    db = actors.db
    n = db.one("SELECT pgretention._as_owner('app.t', 'DELETE FROM app.t WHERE id <= 4')")
    assert n == 4
    assert db.one("SELECT count(*) FROM app.t") == 6
    assert actors.superusers() == []
    who = db.one("SELECT pgretention._as_owner_value('app.t', 'SELECT to_jsonb(current_user::text)')")
    assert who == actors["appowner"]
    assert db.one("SELECT proowner::regrole::text FROM pg_proc WHERE oid = %s::regproc", [_executor_name(actors)]) \
        == actors["appowner"]
    rows = db.all("SELECT r->>'id' FROM pgretention._as_owner_rows('app.t', 'SELECT id FROM app.t ORDER BY id') r")
    assert [r[0] for r in rows] == [str(i) for i in range(5, 11)]


def test_owner_cannot_call_alter_or_replace_its_executor(actors: Actors) -> None:
    """The owner owns the executor but has no USAGE on its schema: calling, replacing, altering
    and granting it are refused, and the executor is unchanged."""
    _owner_table(actors)
    db = actors.db
    db.one("SELECT pgretention._as_owner('app.t', 'SELECT 1')")
    ex = _executor_name(actors)
    src = db.one("SELECT prosrc FROM pg_proc WHERE oid = %s::regproc", [ex])
    with actors.connect("appowner") as own:
        outs = [
            attempt(own, f"SELECT {ex}('ALTER ROLE CURRENT_USER CREATEDB', false)"),
            attempt(own, f"CREATE OR REPLACE FUNCTION {ex}(p_sql text, p_value boolean) RETURNS jsonb"
                         " LANGUAGE sql SECURITY DEFINER AS $$ SELECT NULL::jsonb $$"),
            attempt(own, f"ALTER FUNCTION {ex}(text, boolean) RESET search_path"),
            attempt(own, f"GRANT EXECUTE ON FUNCTION {ex}(text, boolean) TO PUBLIC"),
            attempt(own, "GRANT USAGE ON SCHEMA pgretention_exec TO PUBLIC"),
        ]
    assert all(not o.ok for o in outs), [str(o) for o in outs]
    assert db.one("SELECT prosrc FROM pg_proc WHERE oid = %s::regproc", [ex]) == src
    assert db.one("SELECT proconfig::text FROM pg_proc WHERE oid = %s::regproc", [ex]) \
        == "{\"search_path=pg_catalog, pg_temp\"}"
    assert not db.one("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", [actors["appowner"]])
    assert db.one("SELECT has_schema_privilege(%s, 'pgretention_exec', 'USAGE')", [actors["appowner"]]) is False


@pytest.mark.parametrize("tamper", ["reassigned", "dropped", "body_changed"])
def test_a_changed_executor_is_replaced_before_use(actors: Actors, tamper: str) -> None:
    """An executor reassigned to another role (REASSIGN OWNED), dropped (DROP OWNED) or changed is
    noticed before the next statement, which still runs as the table's owner."""
    _owner_table(actors)
    db = actors.db
    db.one("SELECT pgretention._as_owner('app.t', 'SELECT 1')")
    ex = _executor_name(actors)
    if tamper == "reassigned":
        db.execute(sql.SQL("ALTER FUNCTION {}(text, boolean) OWNER TO CURRENT_USER").format(sql.SQL(ex)))
    elif tamper == "dropped":
        db.execute(sql.SQL("DROP FUNCTION {}(text, boolean)").format(sql.SQL(ex)))
    else:
        owner = sql.Identifier(actors["appowner"])
        db.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}(p_sql text, p_value boolean) RETURNS jsonb LANGUAGE plpgsql"
                           " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;"
                           " ALTER FUNCTION {}(text, boolean) OWNER TO {}").format(sql.SQL(ex), sql.SQL(ex), owner))
    who = db.one("SELECT pgretention._as_owner_value('app.t', 'SELECT to_jsonb(current_user::text)')")
    assert who == actors["appowner"]
    assert db.one("SELECT pgretention._as_owner('app.t', 'DELETE FROM app.t')") == 10
    assert actors.superusers() == []


def test_temporary_objects_stop_pg_partman_calls(actors: Actors) -> None:
    """A session with temporary objects is refused before pg_partman runs (it would resolve them
    ahead of pg_catalog); the same call from a clean session works."""
    db = actors.db
    with db.connect() as conn:
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        out = attempt(conn, "SELECT pgretention.table_create('public.tmp_t', 'id int, at timestamptz', 'at', '1 day',"
                            " '{\"d\": {\"drop_after\": \"30 days\"}}')")
    require(db.one("SELECT to_regclass('public.tmp_t')") is None or not out.ok, "call made")
    assert not out.ok and "temporary objects" in str(out), str(out)
    assert db.one("SELECT count(*) FROM pgretention.managed_table WHERE table_name = 'tmp_t'") == 0
    db.execute("SELECT pgretention.table_create('public.tmp_t', 'id int, at timestamptz', 'at', '1 day',"
               " '{\"d\": {\"drop_after\": \"30 days\"}}')")
    assert db.one("SELECT count(*) FROM pgretention.managed_table WHERE table_name = 'tmp_t'") == 1
