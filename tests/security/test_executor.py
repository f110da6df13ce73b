"""The owner's executor (sql/core/exec.sql): statements on a user's table run with its owner's rights.

The table owner plants code that escalates when it runs with superuser rights (a trigger, a check
constraint's function) and then tries to reach or change its executor; every test asserts that no
role became superuser and that the executor stayed what pgretention wrote.
"""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

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
            attempt(own, f"SELECT {ex}('ALTER ROLE CURRENT_USER CREATEDB', false, NULL)"),
            attempt(own, f"CREATE OR REPLACE FUNCTION {ex}(p_sql text, p_value boolean, p_args text[]) RETURNS jsonb"
                         " LANGUAGE sql SECURITY DEFINER AS $$ SELECT NULL::jsonb $$"),
            attempt(own, f"ALTER FUNCTION {ex}(text, boolean, text[]) RESET search_path"),
            attempt(own, f"GRANT EXECUTE ON FUNCTION {ex}(text, boolean, text[]) TO PUBLIC"),
            attempt(own, "GRANT USAGE ON SCHEMA pgretention_exec TO PUBLIC"),
        ]
    assert all(not o.ok for o in outs), [str(o) for o in outs]
    assert db.one("SELECT prosrc FROM pg_proc WHERE oid = %s::regproc", [ex]) == src
    assert db.one("SELECT proconfig::text FROM pg_proc WHERE oid = %s::regproc", [ex]) \
        == "{\"search_path=pg_catalog, pg_temp\"}"
    assert not db.one("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", [actors["appowner"]])
    assert db.one("SELECT has_schema_privilege(%s, 'pgretention_exec', 'USAGE')", [actors["appowner"]]) is False
    # CREATE on the schema was the owner's only for the moment its executor was given to it
    assert db.one("SELECT has_schema_privilege(%s, 'pgretention_exec', 'CREATE')", [actors["appowner"]]) is False


@pytest.mark.parametrize("tamper", ["reassigned", "dropped", "body_changed"])
def test_a_changed_executor_is_replaced_before_use(actors: Actors, tamper: str) -> None:
    """An executor reassigned to another role (REASSIGN OWNED), dropped (DROP OWNED) or changed is
    noticed before the next statement, which still runs as the table's owner."""
    _owner_table(actors)
    db = actors.db
    db.one("SELECT pgretention._as_owner('app.t', 'SELECT 1')")
    ex = _executor_name(actors)
    if tamper == "reassigned":
        db.execute(sql.SQL("ALTER FUNCTION {}(text, boolean, text[]) OWNER TO CURRENT_USER").format(sql.SQL(ex)))
    elif tamper == "dropped":
        db.execute(sql.SQL("DROP FUNCTION {}(text, boolean, text[])").format(sql.SQL(ex)))
    else:
        owner = sql.Identifier(actors["appowner"])
        db.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}(p_sql text, p_value boolean, p_args text[]) RETURNS jsonb LANGUAGE plpgsql"
                           " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;"
                           " ALTER FUNCTION {}(text, boolean, text[]) OWNER TO {}").format(sql.SQL(ex), sql.SQL(ex), owner))
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


def _owned_log(actors: Actors, *, anonymise: bool = False) -> None:
    """``app.log`` owned by appowner, managed: daily partitions from 5 days ago, kept 7 days
    (anonymised after 2 days when asked), 50 rows 20 days old in the default partition and 50 rows
    3 days old; ``app.fired`` records who ran the owner's code."""
    db = actors.db
    owner = sql.Identifier(actors["appowner"])
    with actors.connect("appowner") as own:
        own.execute("CREATE TYPE app.kind AS ENUM ('call', 'sms')")
        own.execute("CREATE TABLE app.fired (who text, what text)")
        own.execute("CREATE TABLE app.log (id bigint, at timestamptz NOT NULL, phone text, kind app.kind)"
                    " PARTITION BY RANGE (at)")
    cls = {"drop_after": "7 days"}
    if anonymise:
        cls["anonymise_after"] = "2 days"
    db.execute("SELECT pgretention.table_manage('app.log', 'at', '1 day', %s, p_start => now() - interval '5 days')",
               [Jsonb({"d": cls})])
    for (rel,) in db.all("SELECT relid::regclass::text FROM pg_partition_tree('app.log'::regclass)"):
        db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(rel), owner))
    with actors.connect("appowner") as own:
        own.execute("INSERT INTO app.log SELECT g, now() - interval '20 days' - g * interval '1 minute', '+3161234' || g,"
                    " 'call' FROM generate_series(1, 50) g")
        own.execute("INSERT INTO app.log SELECT g, now() - interval '3 days' - g * interval '1 minute', '+3161234' || g,"
                    " 'sms' FROM generate_series(51, 100) g")
        body = payload(f"'{actors['appowner']}'", "{ret}").replace(
            "  RETURN", "  INSERT INTO app.fired VALUES (current_user, {what});\n  RETURN")
        own.execute("CREATE FUNCTION app.on_delete() RETURNS trigger LANGUAGE plpgsql AS $f$"
                    + body.format(what="'delete'", ret="OLD") + "$f$")
        own.execute("CREATE TRIGGER on_delete BEFORE DELETE ON app.log FOR EACH ROW EXECUTE FUNCTION app.on_delete()")
        own.execute("CREATE FUNCTION app.ok(text) RETURNS boolean LANGUAGE plpgsql AS $f$"
                    + body.format(what="'check'", ret="true") + "$f$")
        own.execute("ALTER TABLE app.log ADD CONSTRAINT phone_ok CHECK (app.ok(phone))")
        own.execute("CREATE FUNCTION app.kind_json(app.kind) RETURNS json LANGUAGE plpgsql AS $f$"
                    + body.format(what="'cast'", ret="to_json($1::text)") + "$f$")
        own.execute("CREATE CAST (app.kind AS json) WITH FUNCTION app.kind_json(app.kind)")
        own.execute("TRUNCATE app.fired")


@pytest.mark.parametrize("path", ["default_purge", "held_rows", "anonymise"])
def test_c3_owner_code_in_partition_engine_runs_as_the_owner(actors: Actors, path: str) -> None:
    """C3, partition engine: the owner's trigger (default-partition purge), its cast to json (rows
    kept under a hold when their partition is dropped) and its check constraint (the anonymiser's
    rewritten copy) run as the owner when the scheduled run does its work; the work is done."""
    db = actors.db
    _owned_log(actors, anonymise=path == "anonymise")
    if path == "held_rows":
        db.execute("SELECT pgretention.subject_table_register('app.log', '{\"phone\": \"phone\"}')")
        db.execute("SELECT pgretention.hold_set('order', 'C3-1', 'phone', '+316123451')")
    if path == "anonymise":
        for col, method in [("id", "keep"), ("phone", "redact"), ("kind", "keep")]:
            db.execute("SELECT pgretention.anon_rule_set('app.log', %s, %s)", [col, method])
    with db.connect() as conn:
        if path == "held_rows":  # ten days on: the partitions of 3 days ago are dropped, the held row kept
            conn.execute("SELECT pgretention.simulation_enable()")
            conn.execute("CALL pgretention.run(p_now => now() + interval '10 days', p_runner => 'test')")
        else:
            conn.execute("CALL pgretention.run(p_runner => 'test')")
    assert actors.superusers() == []
    fired = db.all("SELECT DISTINCT who, what FROM app.fired ORDER BY 2")
    assert fired and all(w == actors["appowner"] for w, _ in fired), fired
    if path == "default_purge":
        assert db.one("SELECT count(*) FROM app.log WHERE at < now() - interval '7 days'") == 0
        assert ("" + actors["appowner"], "delete") in fired
    elif path == "held_rows":
        assert db.one("SELECT count(*) FROM app.log WHERE id > 50") == 0
        assert db.one("SELECT count(*) FROM pgretention.hold_store WHERE row_data ->> 'phone' = '+316123451'") == 1
        assert (actors["appowner"], "cast") in fired
    elif path == "anonymise":
        assert db.one("SELECT count(*) FROM app.log WHERE at < now() - interval '2 days' AND phone <> '[redacted]'") == 0
        assert (actors["appowner"], "check") in fired
