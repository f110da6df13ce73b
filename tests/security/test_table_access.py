"""Who may put which table under pgretention (C2, H4, L6 and the checks built for them), and the
inputs that must be refused (M6, L4, L7), attacked the way the review attacked.

pgretention's functions run with the rights of the role that installed it. The one check
``pgretention._user_table`` (core/names.sql) decides which tables a caller may have it act on:
never system, pgretention, pg_partman or pg_cron objects, only ordinary and partitioned tables,
and only tables whose owner the caller acts for (a member of the owner role). ``_user_schema``
decides where ``table_create`` may create. Every attack below runs as the attacking role and
asserts that pgretention's catalog and the data are unchanged; the positive controls show that
the same call works once the admin is granted the owner's role.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.fix_db import DB
from tests.security.fix_roles import (
    Actors,
    attempt,
    give_table,
    make_app_tables,
    make_cdr,
    make_sms_log,
    require,
)

CATALOG = {
    "managed": "SELECT table_schema, table_name, partition_interval::text FROM pgretention.managed_table",
    "classes": "SELECT table_id, class_name, drop_after::text, anonymise_after::text FROM pgretention.retention_class",
    "members": "SELECT table_id, value, class_name FROM pgretention.class_member",
    "subject": "SELECT table_schema, table_name, erasure FROM pgretention.subject_table",
    "columns": "SELECT table_id, column_name, kind FROM pgretention.subject_column",
    "rules": "SELECT rule_name, table_schema, table_name, dependants::text, activity::text FROM pgretention.entity_rule",
    "anon": "SELECT table_id, column_name, method FROM pgretention.anon_rule",
    "rollups": "SELECT table_id, name FROM pgretention.rollup",
    "adoptions": "SELECT table_schema, table_name, state FROM pgretention.adoption",
    "tenants": "SELECT name FROM pgretention.tenant",
    "settings": "SELECT name, value FROM pgretention.setting",
}


def catalog(db: DB) -> dict[str, list[tuple[Any, ...]]]:
    """What pgretention has taken in: compared before and after an attack."""
    return {k: sorted(db.all(q), key=repr) for k, q in CATALOG.items()}


def grant_owner_to_admin(actors: Actors) -> None:
    """The admin acts for the application's owner (the model the checks enforce)."""
    actors.db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(actors["appowner"]), sql.Identifier(actors["adm"])))


def sqlstate(out: Any) -> str | None:
    return None if out.error is None else out.error.sqlstate


# -- system and pgretention's own tables ---------------------------------------------------------------
SYSTEM_TARGETS = [
    ("pg_catalog.pg_authid", "subject", '{"rolname": "account"}'),
    ("information_schema.sql_features", "subject", '{"feature_id": "account"}'),
    ("pgretention.keyring", "subject", '{"purpose": "account"}'),
    ("pgretention.audit_log", "rule", "id"),
    ("pgretention.setting", "subject", '{"name": "account"}'),
    ("partman.part_config", "rule", "parent_table"),
]


@pytest.mark.parametrize("target,how,arg", SYSTEM_TARGETS, ids=[t[0] for t in SYSTEM_TARGETS])
def test_system_and_pgretention_tables_are_refused_to_everyone(actors: Actors, target: str, how: str, arg: str) -> None:
    """C2, H4: the admin (and even the installing role) cannot register a system table,
    pgretention's own tables or pg_partman's configuration as a subject table or entity rule table:
    requests and rules would read, update and delete them with superuser rights."""
    db = actors.db
    before = catalog(db)
    call = ("SELECT pgretention.subject_table_register(%s, %s)" if how == "subject"
            else "SELECT pgretention.entity_rule_create('pwn', %s, %s, '[{\"column\": \"x\"}]', '1 day')")
    with actors.connect("adm") as adm:
        by_admin = attempt(adm, call, [target, arg])
    with db.connect() as installer_role:
        by_owner = attempt(installer_role, call, [target, arg])
    assert catalog(db) == before, f"{target} taken in: admin {by_admin}; installing role {by_owner}"
    assert sqlstate(by_admin) == "42501" and sqlstate(by_owner) == "42501", f"admin {by_admin}; owner {by_owner}"
    assert "pgretention may not act on" in str(by_owner.error)


def test_c2_registration_of_an_earlier_release_is_not_searched(actors: Actors) -> None:
    """C2: ``pg_authid`` registered before this release (written into the catalog directly here):
    the operator's lookups stop with an error naming it instead of reading password hashes, the
    report flags it, and an admin may unregister it."""
    db = actors.db
    tid = db.one("INSERT INTO pgretention.subject_table (table_schema, table_name) VALUES ('pg_catalog', 'pg_authid')"
                 " RETURNING id")
    db.execute("INSERT INTO pgretention.subject_column VALUES (%s, 'rolname', 'account')", [tid])
    with actors.connect("op") as op:
        # roles read a subject's rows through an access request (M1); the request stops at the table
        out = attempt(op, "SELECT row_data ->> 'rolpassword' FROM pgretention.subject_rows("
                          "pgretention.request_create('access', %s))", [Jsonb({"account": [actors["aud"]]})])
        findings = attempt(op, "SELECT object, check_name FROM pgretention.report_findings() WHERE section = 'subject_tables'")
    assert out.error is not None and "pg_catalog.pg_authid" in str(out.error), f"{out}"
    assert findings.rows == [("pg_catalog.pg_authid", "subject_table_broken")], f"{findings}"
    with actors.connect("adm") as adm:
        adm.execute("SELECT pgretention.subject_table_unregister('pg_catalog.pg_authid')")
    assert db.one("SELECT count(*) FROM pgretention.subject_table") == 0


def test_key_material_is_readable_by_the_schema_owner_only(actors: Actors) -> None:
    """C2 (the reading side): no role of pgretention reads a key, from the key store or from the
    views of the previous release's key tables; the admin and the auditor see the epochs only."""
    db = actors.db
    db.execute("SELECT pgretention.field_encrypt('x', 'contacts')")
    db.execute("SELECT pgretention.request_create('access', '{\"phone\": \"+31612340000\"}')")
    require(db.one("SELECT count(*) FROM pgretention.keyring") >= 2, "keys exist")
    reads = {}
    for kind in ("adm", "op", "aud", "evil"):
        with actors.connect(kind) as conn:
            for rel, col in (("keyring", "key"), ("anon_key", "key"), ("field_key", "key"), ("entity_hash_key", "hash_key")):
                out = attempt(conn, sql.SQL("SELECT {} FROM pgretention.{}").format(sql.Identifier(col), sql.Identifier(rel)))
                reads[(kind, rel)] = sqlstate(out)
    assert set(reads.values()) == {"42501"}, f"key reads not refused: {[k for k, v in reads.items() if v != '42501']}"
    grants = db.all("SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants"
                    " WHERE table_schema = 'pgretention' AND table_name IN ('keyring', 'anon_key', 'field_key', 'entity_hash_key')"
                    " AND grantee <> (SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'pgretention')")
    assert grants == [], f"table privileges on key material: {grants}"
    columns = db.all("SELECT grantee, table_name, column_name FROM information_schema.column_privileges"
                     " WHERE table_schema = 'pgretention' AND column_name IN ('key', 'hash_key')"
                     " AND table_name IN ('keyring', 'anon_key', 'field_key', 'entity_hash_key')"
                     " AND grantee <> (SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'pgretention')")
    assert columns == [], f"column privileges on keys: {columns}"


def test_views_and_other_relations_are_not_tables(actors: Actors) -> None:
    """C2: only ordinary and partitioned tables are taken in; a view the admin owns (over a table
    it may read) is refused as a subject table, as are a materialized view and a sequence."""
    db = actors.db
    db.execute(sql.SQL("CREATE SCHEMA admin_schema AUTHORIZATION {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        adm.execute("CREATE TABLE admin_schema.base (id int PRIMARY KEY, email text);"
                    "CREATE VIEW admin_schema.v AS SELECT * FROM admin_schema.base;"
                    "CREATE MATERIALIZED VIEW admin_schema.m AS SELECT * FROM admin_schema.base;"
                    "CREATE SEQUENCE admin_schema.s")
        before = catalog(db)
        outs = {rel: attempt(adm, "SELECT pgretention.subject_table_register(%s, '{\"email\": \"email\"}')", [rel])
                for rel in ("admin_schema.v", "admin_schema.m", "admin_schema.s")}
        own = attempt(adm, "SELECT pgretention.subject_table_register('admin_schema.base', '{\"email\": \"email\"}')")
    assert {r: sqlstate(o) for r, o in outs.items()} == dict.fromkeys(outs, "42809"), f"{outs}"
    assert "admin_schema.v is a view, not a table" in str(outs["admin_schema.v"].error)
    assert own.ok, f"the admin's own table is refused: {own}"
    assert catalog(db)["subject"] == before["subject"] + [("admin_schema", "base", "delete")]


# -- where table_create may create ---------------------------------------------------------------------
@pytest.mark.parametrize("schema", ["app", "public", "pgretention", "partman", "pg_catalog"])
def test_table_create_only_where_the_admin_may_create(actors: Actors, schema: str) -> None:
    """H4: ``table_create`` creates tables with pgretention's rights: only in a schema where the
    caller may create tables itself, and never in reserved schemas."""
    db = actors.db
    before = catalog(db)
    with actors.connect("adm") as adm:
        out = attempt(adm, "SELECT pgretention.table_create(%s, 'id int, at timestamptz', 'at', '1 day',"
                           " '{\"d\": {\"drop_after\": \"30 days\"}}')", [f"{schema}.t_new"])
    made = db.one("SELECT to_regclass(%s)::text", [f"{schema}.t_new"])
    assert made is None and catalog(db) == before, f"{schema}.t_new created: {out}"
    assert sqlstate(out) == "42501", f"{out}"


def test_table_create_in_a_schema_the_admin_may_create_in_is_its_own(actors: Actors) -> None:
    """Positive control: with CREATE on the schema the admin creates a managed table, owned by
    its login; its other admin colleague, not a member of that role, cannot change its classes."""
    db = actors.db
    db.execute(sql.SQL("GRANT CREATE ON SCHEMA app TO {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        adm.execute("SELECT pgretention.table_create('app.clicks', 'id int, at timestamptz', 'at', '1 day',"
                    " '{\"d\": {\"drop_after\": \"30 days\"}}')")
    assert db.one("SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'app.clicks'::regclass") == actors["adm"]
    db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'sec-review-pw' IN ROLE pgretention_admin")
               .format(sql.Identifier(actors["adm"] + "2")))
    try:
        actors.names["adm2"] = actors["adm"] + "2"
        with actors.connect("adm2") as other:
            out = attempt(other, "SELECT pgretention.class_set('app.clicks', 'd', '1 day')")
        assert sqlstate(out) == "42501" and db.one("SELECT drop_after::text FROM pgretention.retention_class") == "30 days"
    finally:
        actors.names.pop("adm2", None)
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(actors["adm"] + "2")))


# -- the tables of entity rules ------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["dependant", "activity"])
def test_entity_rule_dependants_and_activity_tables_need_the_owner(actors: Actors, part: str) -> None:
    """H4 (entity_rule_create): the admin's own table as the rule table, but a dependant (whose rows
    the rule deletes) or an activity table (read with pgretention's rights) of another owner."""
    db = actors.db
    make_app_tables(actors, accounts=5)
    db.execute(sql.SQL("CREATE SCHEMA admin_schema AUTHORIZATION {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        adm.execute("CREATE TABLE admin_schema.acct (id bigint PRIMARY KEY, last_login_at timestamptz)")
        adm.execute("INSERT INTO admin_schema.acct SELECT g, now() - interval '5 years' FROM generate_series(1, 5) g")
        if part == "dependant":
            out = attempt(adm, "SELECT pgretention.entity_rule_create('r', 'admin_schema.acct', 'id',"
                               " '[{\"column\": \"last_login_at\"}]', '1 year',"
                               " p_dependants => '[{\"table\": \"app.contact\", \"fk\": \"account_id\"}]')")
        else:
            out = attempt(adm, "SELECT pgretention.entity_rule_create('r', 'admin_schema.acct', 'id',"
                               " '[{\"table\": \"app.contact\", \"fk\": \"account_id\", \"column\": \"last_seen\"}]', '1 year')")
        run = attempt(adm, "CALL pgretention.entity_run()")
    assert db.one("SELECT count(*) FROM pgretention.entity_rule") == 0, f"rule created: {out}"
    assert db.one("SELECT count(*) FROM app.contact") == 10, f"contacts deleted; {out}; {run}"
    assert sqlstate(out) == "42501" and "app.contact" in str(out.error), f"{out}"


# -- changes of a managed table's policy ---------------------------------------------------------------
POLICY = {
    "class_set": "SELECT pgretention.class_set('public.cdr', 'eu', '1 day')",
    "class_add": "SELECT pgretention.class_add('public.cdr', 'short', '1 day', p_members => ARRAY['SMS'])",
    "member_assign": "SELECT pgretention.member_assign('public.cdr', 'NL', 'sms')",
    "table_set_interval": "SELECT pgretention.table_set_interval('public.cdr', '1 week')",
    "anon_rule_set": "SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'null')",
    "rollup_add": "SELECT pgretention.rollup_add('public.cdr', 'byregion', '[{\"column\": \"region\"}]', '{\"n\": \"count\"}')",
    "table_release": "SELECT pgretention.table_release('public.cdr')",
    "restriction_view_create": "SELECT pgretention.restriction_view_create('public.cdr')",
    "subject_table_unregister": "SELECT pgretention.subject_table_unregister('public.cdr')",
    "subject_index": "SELECT pgretention._attach_leaf_indexes('public.cdr', 'cdr_caller_pgr_idx', 'caller')",
}


@pytest.mark.parametrize("change", sorted(POLICY))
def test_policy_of_another_owners_table_cannot_be_changed(actors: Actors, change: str) -> None:
    """H4: a managed table of the application (taken in by the installing role): an admin that does
    not act for its owner changes nothing of its policy; once granted the owner's role it can."""
    db = actors.db
    make_cdr(db, months=2, rows=50, subject=True)
    give_table(db, "public.cdr", actors["appowner"])
    before = catalog(db)
    relations = db.all("SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1")
    with actors.connect("adm") as adm:
        out = attempt(adm, POLICY[change])
    assert catalog(db) == before, f"{change} changed the catalog: {out}"
    assert db.all("SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1") == relations
    assert sqlstate(out) == "42501" and actors["appowner"] in str(out.error), f"{out}"
    if change == "subject_index":
        return  # the index does not exist: the positive control is subject_index_ddl's own test
    grant_owner_to_admin(actors)
    with actors.connect("adm") as adm:
        again = attempt(adm, POLICY[change])
    assert again.ok, f"{change} refused to the owner's member: {again}"


# -- subject tables: unregister ------------------------------------------------------------------------
def test_subject_table_unregister(actors: Actors) -> None:
    """M3: an admin unregisters a table its owner dropped (any admin: nothing is left to protect);
    a live table of another owner only once it acts for the owner. Each is audited."""
    db = actors.db
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.customer (id int PRIMARY KEY, phone text); CREATE TABLE app.old (id int, phone text)")
    db.execute("SELECT pgretention.subject_table_register('app.customer', '{\"phone\": \"phone\"}')")
    db.execute("SELECT pgretention.subject_table_register('app.old', '{\"phone\": \"phone\"}')")
    with actors.connect("appowner") as own:
        own.execute("DROP TABLE app.old")
    with actors.connect("adm") as adm:
        live = attempt(adm, "SELECT pgretention.subject_table_unregister('app.customer')")
        dropped = attempt(adm, "SELECT pgretention.subject_table_unregister('app.old')")
    assert sqlstate(live) == "42501" and dropped.ok, f"live {live}; dropped {dropped}"
    assert db.all("SELECT table_name FROM pgretention.subject_table") == [("customer",)]
    grant_owner_to_admin(actors)
    res = db.cli("subject", "unregister", "app.customer", dsn=actors.dsn("adm"))
    assert res.returncode == 0 and "unregistered app.customer" in res.stdout, res.stderr
    assert db.one("SELECT count(*) FROM pgretention.subject_table") == 0
    assert db.all("SELECT object, session_role FROM pgretention.audit_log WHERE action = 'subject.unregister_table'"
                  " ORDER BY id") == [("app.old", actors["adm"]), ("app.customer", actors["adm"])]


# -- broken tables (M3, M7): plan and status report them and go on -------------------------------------
BREAKS = {
    "renamed": "ALTER TABLE app.ledger RENAME TO ledger_renamed",
    "moved": "CREATE SCHEMA app2; ALTER TABLE app.ledger SET SCHEMA app2",
    "dropped": "DROP TABLE app.ledger",
    "time_column_renamed": "ALTER TABLE app.ledger RENAME COLUMN at TO booked_at",
}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_m7_broken_managed_table_reported_by_status_plan_and_report(actors: Actors, how: str) -> None:
    """M7: the owner renames, moves or drops a managed table, or renames its time column: status
    and plan (as the operator and the auditor) name the table and what to do, the others are
    planned as usual, and the report has a violation for it."""
    db = actors.db
    make_sms_log(db, default_rows=0)
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.ledger (id int, at timestamptz NOT NULL) PARTITION BY RANGE (at)")
    db.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db.name), sql.Identifier(actors["appowner"])))
    db.execute("SELECT pgretention.table_manage('app.ledger', 'at', '1 day', '{\"d\": {\"drop_after\": \"1 day\"}}')")
    give_table(db, "app.ledger", actors["appowner"])  # its partitions too: the owner's DDL recurses into them
    with actors.connect("appowner") as own:
        own.execute(BREAKS[how])
    for kind in ("op", "aud"):
        with actors.connect(kind) as conn:
            status = attempt(conn, "SELECT table_name, problem FROM pgretention.status() ORDER BY 1")
            plan = attempt(conn, "SELECT table_name, action FROM pgretention.plan() WHERE action LIKE 'skipped%'")
            findings = attempt(conn, "SELECT severity, object, check_name, message FROM pgretention.report_findings()"
                                     " WHERE check_name = 'table_broken'")
        assert status.ok and plan.ok and findings.ok, f"{kind}: status {status}; plan {plan}; findings {findings}"
        problems = dict(status.rows)
        assert problems["public.sms_log"] is None and problems["app.ledger"], f"{status}"
        assert [r[0] for r in plan.rows] == ["app.ledger"], f"{plan}"
        assert [(r[0], r[1]) for r in findings.rows] == [("violation", "app.ledger")], f"{findings}"
    message = problems["app.ledger"]
    expected = {"renamed": "is now app.ledger_renamed", "moved": "is now app2.ledger", "dropped": "does not exist",
                "time_column_renamed": "time column at of table app.ledger does not exist"}[how]
    assert expected in message, message
    res = db.cli("status")  # the command says it too
    assert res.returncode == 0 and f"error: {message}" in res.stdout, f"exit {res.returncode}: {res.stdout[-500:]}"


def test_m3_renamed_subject_column_plan_status_and_requests(actors: Actors) -> None:
    """M3 (plan, status, requests): the owner renames an identifier column of a registered
    managed table. plan and status answer, name the table and go on with the others; the report
    flags it; a request stops with an error naming the table (answering without it would report
    the subject's rows as erased while they are kept), and nothing is deleted anywhere."""
    db = actors.db
    make_cdr(db, months=2, rows=100, subject=True)
    make_sms_log(db, default_rows=0)
    db.execute("SELECT pgretention.hold_set('fraud investigation', 'COURT-1', 'phone', '+31612340005')")
    give_table(db, "public.cdr", actors["appowner"])
    with actors.connect("appowner") as own:
        own.execute("ALTER TABLE public.cdr RENAME COLUMN callee TO b_number")
    rows = db.one("SELECT count(*) FROM public.cdr")
    with actors.connect("op") as op:
        status = attempt(op, "SELECT table_name, problem FROM pgretention.status()")
        plan = attempt(op, "SELECT table_name, action FROM pgretention.plan()")
        findings = attempt(op, "SELECT object, check_name FROM pgretention.report_findings() WHERE severity = 'violation'")
        request = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                          [Jsonb({"phone": "+31612340001"})])
    assert status.ok and plan.ok, f"status {status}; plan {plan}"
    problems = {r[0]: r[1] for r in status.rows}
    assert problems["public.sms_log"] is None and "column callee does not exist" in problems["public.cdr"], problems
    assert {r[0] for r in plan.rows if r[1].startswith("skipped")} == {"public.cdr"}, f"{plan}"
    assert {("public.cdr", "table_broken"), ("public.cdr", "subject_table_broken")} <= set(findings.rows), f"{findings}"
    assert request.error is not None and "public.cdr" in str(request.error), f"{request}"
    assert db.one("SELECT count(*) FROM public.cdr") == rows


# -- M5 / L9: the restriction view and is_restricted ---------------------------------------------------
def test_m5_restriction_view_keeps_rls_for_its_readers(actors: Actors) -> None:
    """M5, L9: a reader granted the view and is_restricted as documented sees through
    ``<table>_unrestricted`` exactly the rows the table's row level security shows it, less the
    restricted subject's; the view is security_invoker and owned by the table's owner."""
    db = actors.db
    evil = actors["evil"]
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.newsletter (id int PRIMARY KEY, email text, reader text)")
        own.execute("INSERT INTO app.newsletter VALUES (1, 'a@example.org', %s), (2, 'b@example.org', %s),"
                    " (3, 'c@example.org', 'someone_else')", [evil, evil])
        own.execute("ALTER TABLE app.newsletter ENABLE ROW LEVEL SECURITY;"
                    "CREATE POLICY own_rows ON app.newsletter FOR SELECT USING (reader = current_user)")
        own.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {0}; GRANT SELECT ON app.newsletter TO {0}").format(sql.Identifier(evil)))
    db.execute("SELECT pgretention.subject_table_register('app.newsletter', '{\"email\": \"email\"}')")
    db.execute("SELECT pgretention.request_fulfil(pgretention.request_create('restriction', '{\"email\": \"b@example.org\"}'))")
    grant_owner_to_admin(actors)
    with actors.connect("adm") as adm:
        view = adm.execute("SELECT pgretention.restriction_view_create('app.newsletter')").fetchone()[0]  # type: ignore[index]
    with actors.connect("appowner") as own:  # the owner grants its view, as it grants its table
        own.execute(sql.SQL("GRANT SELECT ON app.newsletter_unrestricted TO {}").format(sql.Identifier(evil)))
    # as documented for applications
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA pgretention TO {0};"
                       " GRANT EXECUTE ON FUNCTION pgretention.is_restricted(text, text) TO {0}").format(sql.Identifier(evil)))
    with actors.connect("evil") as conn:
        table_ids = [r[0] for r in conn.execute("SELECT id FROM app.newsletter ORDER BY id").fetchall()]
        view_ids = [r[0] for r in conn.execute("SELECT id FROM app.newsletter_unrestricted ORDER BY id").fetchall()]
        flag = conn.execute("SELECT pgretention.is_restricted('email', 'b@example.org')").fetchone()
    assert view == "app.newsletter_unrestricted" and table_ids == [1, 2] and view_ids == [1], f"{table_ids} {view_ids}"
    assert flag == (True,)
    assert db.all("SELECT pg_get_userbyid(relowner)::text, reloptions::text[] FROM pg_class WHERE oid = %s::regclass",
                  [view]) == [(actors["appowner"], ["security_invoker=true", "security_barrier=true"])]
    for kind in ("adm", "op", "aud"):
        with actors.connect(kind) as conn:
            assert attempt(conn, "SELECT pgretention.is_restricted('email', 'x@example.org')").ok


# -- H7: owner and privileges of the re-created views --------------------------------------------------
def test_h7_adopt_keeps_view_owner_and_privileges(actors: Actors) -> None:
    """H7: besides their options, the views adopt re-creates keep their owner and their grants."""
    db = actors.db
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.events (id int PRIMARY KEY, at timestamptz NOT NULL, kind text)")
        own.execute("INSERT INTO app.events SELECT g, now() - g * interval '1 hour', 'k' FROM generate_series(1, 50) g")
        own.execute("CREATE VIEW app.kinds WITH (security_barrier = true) AS SELECT kind, at FROM app.events")
        own.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {0}; GRANT SELECT ON app.kinds TO {0}").format(sql.Identifier(actors["evil"])))
    query = "SELECT pg_get_userbyid(relowner)::text, relacl::text, reloptions::text FROM pg_class WHERE oid = 'app.kinds'::regclass"
    before = db.all(query)
    grant_owner_to_admin(actors)
    with actors.connect("adm") as adm:
        adm.execute("CALL pgretention.adopt('app.events', 'at', '90 days', '1 day', p_key => 'local')")
    adopted = db.all(query)
    with actors.connect("adm") as adm:
        adm.execute("SELECT pgretention.adopt_undo('app.events')")
    assert adopted == before and db.all(query) == before, f"{before} -> {adopted} -> {db.all(query)}"
    with actors.connect("evil") as conn:
        assert conn.execute("SELECT count(*) FROM app.kinds").fetchone() == (50,)


# -- M6: mixed-sign intervals, in every caller ---------------------------------------------------------
MIXED = {
    "table_create drop_after": "SELECT pgretention.table_create('public.t_iv', 'id int, at timestamptz', 'at', '1 day',"
                               " '{\"d\": {\"drop_after\": \"1 mon -30 days\"}}')",
    "table_create interval": "SELECT pgretention.table_create('public.t_iv', 'id int, at timestamptz', 'at',"
                             " '1 day -1 hour', '{\"d\": {\"drop_after\": \"30 days\"}}')",
    "class_set": "SELECT pgretention.class_set('public.cdr', 'eu', '6 mons -200 days 1 hour')",
    "class_add anonymise_after": "SELECT pgretention.class_add('public.cdr', 'x', '1 year', '-1 day 1 mon')",
    "setting": "SELECT pgretention.setting_set('job_history_keep', '1 mon -29 days')",
    "entity period": "SELECT pgretention.entity_rule_create('leads', 'app.lead', 'id', '[{\"column\": \"created_at\"}]',"
                     " '2 years -800 days')",
    "adopt drop_after": "SELECT * FROM pgretention.adopt_plan('app.lead', 'created_at', '1 mon -31 days', p_key => 'local')",
}


@pytest.mark.parametrize("caller", sorted(MIXED))
def test_m6_mixed_sign_intervals_refused_everywhere(actors: Actors, caller: str) -> None:
    """M6: an interval with a negative part (months, days or time) is refused by every caller,
    with an error naming it, and nothing changes."""
    db = actors.db
    make_cdr(db, months=1, rows=10)
    make_app_tables(actors, accounts=2, leads=2, due_leads=1)
    give_table(db, "public.cdr", actors["appowner"])
    grant_owner_to_admin(actors)
    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(actors["adm"])))
    before = catalog(db)
    with actors.connect("adm") as adm:
        out = attempt(adm, MIXED[caller])
    assert catalog(db) == before and db.one("SELECT to_regclass('public.t_iv')") is None, f"{caller}: {out}"
    assert sqlstate(out) == "22023" and "every part must be positive" in str(out.error), f"{out}"


# -- L4: names -----------------------------------------------------------------------------------------
HIDDEN = {
    "zero width space in a table name": ("SELECT pgretention.table_create(%s, 'id int, at timestamptz', 'at', '1 day',"
                                         " '{\"d\": {\"drop_after\": \"30 days\"}}')", ["public.t\u200bx"]),
    "bidi isolate in a column": ("SELECT pgretention.table_create('public.tx', %s, 'at', '1 day',"
                                 " '{\"d\": {\"drop_after\": \"30 days\"}}')", ['"a\u2066b" int, at timestamptz']),
    "bidi override in a schema": ("SELECT pgretention.table_create(%s, 'id int, at timestamptz', 'at', '1 day',"
                                  " '{\"d\": {\"drop_after\": \"30 days\"}}')", ["pub\u202elic.tx"]),
    "byte order mark in an identifier column": ("SELECT pgretention.subject_table_register('public.cdr', %s)",
                                                [Jsonb({"caller\ufeff": "phone"})]),
    "right-to-left mark in a tenant": ("SELECT pgretention.tenant_register(%s)", ["acme\u200f"]),
    "upper case new table": ("SELECT pgretention.table_create(%s, 'id int, at timestamptz', 'at', '1 day',"
                             " '{\"d\": {\"drop_after\": \"30 days\"}}')", ["public.T_Upper"]),
}


@pytest.mark.parametrize("case", sorted(HIDDEN))
def test_l4_names_that_read_as_other_names_are_refused(actors: Actors, case: str) -> None:
    """L4: control, invisible and direction-changing characters are refused in every name, and a
    new table gets a lower-case name; the error shows the hidden character as <U+XXXX>."""
    db = actors.db
    make_cdr(db, months=1, rows=10)
    give_table(db, "public.cdr", actors["appowner"])
    grant_owner_to_admin(actors)
    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(actors["adm"])))
    before = catalog(db)
    relations = db.one("SELECT count(*) FROM pg_class")
    query, params = HIDDEN[case]
    with actors.connect("adm") as adm:
        out = attempt(adm, query, params)
    assert catalog(db) == before and db.one("SELECT count(*) FROM pg_class") == relations, f"{case}: {out}"
    assert sqlstate(out) in ("42602", "22023"), f"{out}"
    if case != "upper case new table":
        assert "<U+" in str(out.error), f"{out}"


def test_l4_existing_mixed_case_table_is_named_exactly(installed: DB) -> None:
    """L4 (case): names are exact. An existing table "Customer" is registered as 'public.Customer';
    'public.customer' is refused with a hint naming the table."""
    db = installed
    db.execute('CREATE TABLE public."Customer" (id int PRIMARY KEY, email text)')
    with pytest.raises(psycopg.errors.UndefinedTable) as exc:
        db.execute("SELECT pgretention.subject_table_register('public.customer', '{\"email\": \"email\"}')")
    assert exc.value.diag.message_hint and 'did you mean public."Customer"' in exc.value.diag.message_hint
    db.execute("SELECT pgretention.subject_table_register('public.Customer', '{\"email\": \"email\"}')")
    assert db.all("SELECT table_name FROM pgretention.subject_table") == [("Customer",)]


# -- L7: roll-ups --------------------------------------------------------------------------------------
ROLLUPS = {
    "caller prefix longer than anonymisation keeps": ([{"column": "caller", "prefix": 8}], {"n": "count"}, 5),
    "max of an identifier": ([{"column": "region"}], {"n": "count", "top": "max:callee"}, 5),
    "group size one": ([{"column": "region"}], {"n": "count"}, 1),
    "time finer than its rule": ([{"column": "started_at", "trunc": "hour"}], {"n": "count"}, 5),
}


@pytest.mark.parametrize("case", sorted(ROLLUPS))
def test_l7_rollups_refuse_what_identifies_people(actors: Actors, case: str) -> None:
    """L7: a roll-up (never purged) may not keep identifiers: group size 1, an identifier grouped
    by more than anonymisation keeps of it, min/max of an identifier, time finer than its rule."""
    db = actors.db
    make_cdr(db, months=1, rows=10, subject=True)
    db.execute("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'e164_prefix', '4')")
    give_table(db, "public.cdr", actors["appowner"])
    grant_owner_to_admin(actors)
    group_by, measures, size = ROLLUPS[case]
    before = catalog(db)
    with actors.connect("adm") as adm:
        if case == "time finer than its rule":  # the time column cannot have a rule: a timestamp column can
            with actors.connect("appowner") as own:
                own.execute("ALTER TABLE public.cdr ADD COLUMN answered_at timestamptz")
            adm.execute("SELECT pgretention.anon_rule_set('public.cdr', 'answered_at', 'time_trunc', 'day')")
            before = catalog(db)
            group_by = [{"column": "answered_at", "trunc": "hour"}]
        out = attempt(adm, "SELECT pgretention.rollup_add('public.cdr', 'r', %s, %s, %s)", [Jsonb(group_by), Jsonb(measures), size])
    assert catalog(db) == before and db.one("SELECT to_regclass('public.cdr_rollup_r')") is None, f"{case}: {out}"
    assert sqlstate(out) == "22023", f"{out}"


def test_l7_rule_added_later_may_not_expose_a_rollup(actors: Actors) -> None:
    """L7: a roll-up grouped by a column that is no identifier yet; registering the column as an
    identifier (or an anonymisation rule for it) afterwards is refused while the roll-up groups by it."""
    db = actors.db
    make_cdr(db, months=1, rows=10)
    db.execute("SELECT pgretention.rollup_add('public.cdr', 'bycallee', '[{\"column\": \"callee\"}]', '{\"n\": \"count\"}')")
    give_table(db, "public.cdr", actors["appowner"])
    grant_owner_to_admin(actors)
    before = catalog(db)
    with actors.connect("adm") as adm:
        register = attempt(adm, "SELECT pgretention.subject_table_register('public.cdr', '{\"callee\": \"phone\"}')")
        rule = attempt(adm, "SELECT pgretention.anon_rule_set('public.cdr', 'callee', 'pseudonym')")
        allowed = attempt(adm, "SELECT pgretention.rollup_add('public.cdr', 'byarea', '[{\"column\": \"caller\", \"prefix\": 5}]',"
                               " '{\"n\": \"count\"}')")
    assert catalog(db)["subject"] == before["subject"] and catalog(db)["anon"] == before["anon"], f"{register}; {rule}"
    assert sqlstate(register) == "22023" and sqlstate(rule) == "22023" and "bycallee" in str(rule.error)
    assert allowed.ok, f"{allowed}"
