"""H4, H7, M5, M6, L2, L6, L7: what the admin can do to tables it has no rights on, and what
pgretention's own DDL does to the privileges and options of others' objects.

Fixed means: the owner's rows are all still there, a role reads nothing it could not read
before, view options are unchanged, bad input is refused.
"""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import (
    LEADS_RULE,
    Actors,
    attempt,
    give_table,
    make_app_events,
    make_app_tables,
    make_cdr,
    make_ledger,
    require,
)

# Internal functions the attacks call by name (update here when internals are renamed).
INTERNAL = {
    "attach_leaf_indexes": ("pgretention", "_attach_leaf_indexes"),
}

VIEWS = ("app.my_events", "app.recent_events")


def call(key: str, args: str) -> sql.Composed:
    return sql.SQL("SELECT {}(" + args + ")").format(sql.Identifier(*INTERNAL[key]))


@pytest.mark.parametrize("how", ["manage_table", "entity_rule", "subject_table", "adopt"])
def test_h4_admin_purges_tables_it_has_no_privilege_on(actors: Actors, how: str) -> None:
    """H4: the admin, without USAGE on schema ``app``, takes the owner's tables under retention
    (manage_table, an entity rule, a subject table, adopt) and has their rows deleted."""
    db = actors.db
    if how == "manage_table":
        make_ledger(actors, rows=100, days_ago=10)
        table, steps = "app.ledger", [
            "SELECT pgretention.table_manage('app.ledger', 'at', '1 day', '{\"d\": {\"drop_after\": \"1 day\"}}')",
            "CALL pgretention.run(p_table => 'app.ledger')"]
    elif how == "entity_rule":
        make_app_tables(actors, leads=20, due_leads=10)
        table, steps = "app.lead", [LEADS_RULE, "CALL pgretention.entity_run()"]
    elif how == "subject_table":
        make_app_tables(actors, leads=20)
        table, steps = "app.lead", [
            "SELECT pgretention.subject_table_register('app.lead', '{\"email\": \"email\"}')",
            "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', '{\"email\": [\"l1@x.nl\", \"l2@x.nl\"]}'))"]
    else:
        make_app_events(actors, rows=200, days=20)
        table, steps = "app.events", [
            "CALL pgretention.adopt('app.events', 'at', '1 day', '1 day', p_key => 'local')",
            "CALL pgretention.run(p_table => 'app.events')"]
    before = db.one(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))
    with actors.connect("adm") as adm:
        require(not adm.execute("SELECT has_schema_privilege('app', 'USAGE')").fetchone()[0],  # type: ignore[index]
                "the admin has no USAGE on schema app")
        outs = [attempt(adm, s) for s in steps]
    after = db.one(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))
    assert after == before, f"{table}: {before} -> {after} rows; {[str(o) for o in outs]}"
    taken = db.one("SELECT (SELECT count(*) FROM pgretention.managed_table) + (SELECT count(*) FROM pgretention.entity_rule)"
                   " + (SELECT count(*) FROM pgretention.subject_table) + (SELECT count(*) FROM pgretention.adoption)")
    assert taken == 0, f"{table} was taken in by pgretention although it was refused: {[str(o) for o in outs]}"


def _events_with_views(actors: Actors) -> None:
    make_app_events(actors, rows=200, days=20)
    with actors.connect("appowner") as own:
        own.execute("CREATE VIEW app.my_events WITH (security_invoker = true, security_barrier = true)"
                    " AS SELECT * FROM app.events")
        own.execute("CREATE VIEW app.recent_events AS SELECT * FROM app.events WHERE at > now() - interval '7 days'"
                    " WITH CASCADED CHECK OPTION")
        own.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {0}; GRANT SELECT ON app.my_events TO {0}")
                    .format(sql.Identifier(actors["evil"])))
    # adopt and unadopt act on the owner's table: the admin acts for the owner (as a fixed model requires)
    actors.db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(actors["appowner"]), sql.Identifier(actors["adm"])))


def _view_options(actors: Actors) -> dict[str, list[str] | None]:
    return {v: actors.db.one("SELECT reloptions::text[] FROM pg_class WHERE oid = %s::regclass", [v]) for v in VIEWS}


def _evil_reads(actors: Actors) -> str:
    with actors.connect("evil") as evil:
        return str(attempt(evil, "SELECT count(*) FROM app.my_events"))


@pytest.mark.parametrize("step", ["adopt", "unadopt"])
def test_h7_adopt_strips_view_options(actors: Actors, step: str) -> None:
    """H7: ``adopt`` / ``unadopt`` re-create dependent views without their options:
    security_invoker, security_barrier and check_option go, and a reader of a security_invoker view
    bypasses the table's privileges."""
    _events_with_views(actors)
    if step == "unadopt":
        actors.db.execute("CALL pgretention.adopt('app.events', 'at', '90 days', '1 day', p_key => 'local')")
        with actors.connect("appowner") as own:  # the owner puts its options back
            own.execute("ALTER VIEW app.my_events SET (security_invoker = true, security_barrier = true);"
                        "ALTER VIEW app.recent_events SET (check_option = cascaded)")
    options = _view_options(actors)
    denied = _evil_reads(actors)
    require(denied.startswith("raised InsufficientPrivilege"), f"evil cannot read app.my_events before ({denied})")
    with actors.connect("adm") as adm:
        if step == "adopt":
            out = attempt(adm, "CALL pgretention.adopt('app.events', 'at', '90 days', '1 day', p_key => 'local')")
        else:
            out = attempt(adm, "SELECT pgretention.adopt_undo('app.events')")
    after = _view_options(actors)
    reads = _evil_reads(actors)
    assert after == options and not reads.startswith("returned"), \
        f"view options {options} -> {after}; evil now {reads}; {step} {out}"


def test_m5_unrestricted_view_bypasses_rls(actors: Actors) -> None:
    """M5: ``create_unrestricted_view`` creates the view as the superuser that owns pgretention's
    functions: a reader of the view bypasses the base table's row level security."""
    db = actors.db
    evil = sql.Identifier(actors["evil"])
    # the admin acts for the table's owner (as a fixed model requires), so the view is created
    db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(actors["appowner"]), sql.Identifier(actors["adm"])))
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.newsletter (id int PRIMARY KEY, email text, tenant text)")
        own.execute("INSERT INTO app.newsletter VALUES (1, 'a@example.org', 'acme'), (2, 'b@example.org', 'acme')")
        own.execute("ALTER TABLE app.newsletter ENABLE ROW LEVEL SECURITY;"
                    "CREATE POLICY own_tenant ON app.newsletter FOR SELECT USING (tenant = current_user)")
        own.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {0}; GRANT SELECT ON app.newsletter TO {0}").format(evil))
    db.execute("SELECT pgretention.subject_table_register('app.newsletter', '{\"email\": \"email\"}')")
    with actors.connect("adm") as adm:
        view = attempt(adm, "SELECT pgretention.restriction_view_create('app.newsletter')")
    if view.ok:  # as the docs intend: applications read the view
        db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(view.rows[0][0]), evil))
    with actors.connect("evil") as conn:
        base = attempt(conn, "SELECT count(*) FROM app.newsletter")
        through = attempt(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(view.rows[0][0]))) if view.ok else view
    visible = base.rows[0][0] if base.ok else 0
    seen = through.rows[0][0] if through.ok else 0
    assert seen <= visible, f"evil sees {visible} rows of the table and {seen} through the view {view}"


def test_m6_mixed_sign_interval_drops_data_ahead_of_reference(actors: Actors) -> None:
    """M6: ``1 mon -30 days 1 hour`` passes the 'positive' check (months count as 30 days); in
    March it lies in the future, and the plan drops partitions ahead of the reference time."""
    db = actors.db
    # the admin may create tables in public (as in the review), so only the interval can stop it
    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(actors["adm"])))
    ref = "2026-03-15 12:00+00"
    with actors.connect("adm") as adm:
        out = attempt(adm, "SELECT pgretention.table_create('public.mixed_iv', 'id int, at timestamptz', 'at', '1 week',"
                           " '{\"d\": {\"drop_after\": \"1 mon -30 days 1 hour\"}}', p_start => '2026-03-02', p_premake => 2)")
    ahead = []
    if out.ok:
        ahead = db.all("SELECT partition, range_from, range_to FROM pgretention.plan(%s, 'public.mixed_iv')"
                       " WHERE range_to::timestamptz > %s::timestamptz", [ref, ref])
    assert ahead == [], f"interval accepted ({out}); plan at {ref} drops {ahead}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="L2: fixed by issue 17")
def test_l2_callers_search_path_clobbered(actors: Actors) -> None:
    """L2: ``_partman_call`` resets the session's search_path to the server default: a caller with
    ``SET search_path = app, public`` has ``"$user", public`` after ``create_table``."""
    # the admin may create tables in public (as in the review), so that create_table reaches pg_partman
    actors.db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        adm.execute("SET search_path = app, public")
        out = attempt(adm, "SELECT pgretention.table_create('public.clicks', 'id bigint, at timestamptz', 'at', '1 day',"
                           " '{\"d\": {\"drop_after\": \"30 days\"}}')")
        path = adm.execute("SHOW search_path").fetchone()
    assert path is not None and path[0] == "app, public", f"search_path is {path}; create_table {out}"


def test_l6_attach_leaf_indexes_on_any_table(actors: Actors) -> None:
    """L6: ``_attach_leaf_indexes`` (granted to the admin) creates and attaches indexes on any
    partitioned table, as superuser, e.g. on the owner's table in a schema the admin cannot use."""
    db = actors.db
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.p (id int, col text) PARTITION BY RANGE (id);"
                    "CREATE TABLE app.p1 PARTITION OF app.p FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);"
                    "CREATE TABLE app.p1a PARTITION OF app.p1 FOR VALUES FROM (0) TO (50);"
                    "CREATE INDEX p_col_idx ON ONLY app.p (col)")
    query = "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid" \
            " WHERE c.relnamespace = 'app'::regnamespace ORDER BY 1"
    before = db.all(query)
    with actors.connect("adm") as adm:
        out = attempt(adm, call("attach_leaf_indexes", "'app.p', 'p_col_idx', 'col'"))
    after = db.all(query)
    assert after == before, f"indexes on the owner's table {before} -> {after}; attack {out}"


def test_l7_rollup_keeps_identifiers_forever(actors: Actors) -> None:
    """L7: a roll-up grouped by an identifier column with minimum group size 1 copies every
    caller's number into a roll-up table that is never purged."""
    db = actors.db
    make_cdr(db, months=8, rows=400, subject=True)
    # the admin acts for the table's owner (as a fixed model requires): only the roll-up's shape can stop it
    give_table(db, "public.cdr", actors["appowner"])
    db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(actors["appowner"]), sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        out = attempt(adm, "SELECT pgretention.rollup_add('public.cdr', 'bycaller', %s, %s, 1)",
                      [Jsonb([{"column": "caller"}]), Jsonb({"calls": "count"})])
    with actors.connect("op") as op:
        run = attempt(op, "CALL pgretention.run()")  # expired eu partitions are rolled up, then dropped
    kept = 0
    if out.ok:
        kept = db.one(sql.SQL("SELECT count(*) FROM {} r WHERE r::text ~ '[+]3161234'").format(sql.SQL(out.rows[0][0])))
    assert kept == 0, f"{kept} roll-up rows carry phone numbers; add_rollup {out}; run {run}"
