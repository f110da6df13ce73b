"""C3, H2, M3, M7: owners of application tables and of the database turn pgretention's rights
against it, or break it for everyone.

C3 and H2 measure that no role of the test became a superuser; M3 and M7 that retention keeps
working (or says loudly that it does not) when one table is changed under it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import (
    Actors,
    attempt,
    give_table,
    make_app_entities,
    make_app_events,
    make_cdr,
    make_ledger,
    make_sms_log,
    payload,
    phone,
    require,
)

# the owner of the table a trigger fires on, as the payload's target
TABLE_OWNER = "(SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID)"
DB_OWNER = ("(SELECT pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d"
            " WHERE d.datname = pg_catalog.current_database())")


@pytest.mark.parametrize("path", [
    "erasure",  # refused at registration: the admin does not act for the table's owner (_user_table)
    "erasure_for_owner",  # registered by an admin that acts for the owner: the executor runs it as the owner
    "entity_run",  # the executor runs the batch as the owner (sql/core/exec.sql)
])
def test_c3_table_owner_trigger_runs_as_superuser(actors: Actors, path: str) -> None:
    """C3: a table owner -> superuser through a trigger on its own table, fired by pgretention's
    DML (an erasure request fulfilled by the operator, or an entity run as the scheduler does)."""
    db = actors.db
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.customer (id int PRIMARY KEY, phone text, name text, last_seen timestamptz)")
        own.execute("INSERT INTO app.customer VALUES (1, '+31612349999', 'Alice', now() - interval '3 years'),"
                    " (2, '+31687654321', 'Bob', now() - interval '3 years')")
    # taking the table in is part of the scenario: refusing a table of another owner is one way to fix C3
    if path == "erasure_for_owner":
        db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(actors["appowner"]), sql.Identifier(actors["adm"])))
    if path.startswith("erasure"):
        with actors.connect("adm") as adm:  # routine DPO work
            taken = attempt(adm, "SELECT pgretention.subject_table_register('app.customer', '{\"phone\": \"phone\"}')")
    else:
        with db.connect() as installer_role:
            taken = attempt(installer_role, "SELECT pgretention.entity_rule_create('customers', 'app.customer', 'id',"
                                            " '[{\"column\": \"last_seen\"}]', '2 years')")
    with actors.connect("appowner") as own:  # afterwards, on its own table
        own.execute("CREATE FUNCTION app.audit_delete() RETURNS trigger LANGUAGE plpgsql AS $f$"
                    + payload(TABLE_OWNER, ret="OLD") + "$f$")
        own.execute("CREATE TRIGGER audit_delete BEFORE DELETE ON app.customer FOR EACH ROW"
                    " EXECUTE FUNCTION app.audit_delete()")
    with actors.connect("op") as op:  # routine
        if path.startswith("erasure"):
            out = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                          [Jsonb({"phone": "+31612349999"})])
        else:
            out = attempt(op, "CALL pgretention.entity_run()")
    assert actors.superusers() == [], f"table owner became superuser; taken in: {taken}; {path} {out}"
    if path == "erasure_for_owner":  # the erasure itself was done, with the owner's rights
        assert taken.ok and db.one("SELECT count(*) FROM app.customer WHERE phone = '+31612349999'") == 0, str(out)


@pytest.mark.parametrize("runner", ["cron_job", "cli"])
def test_h2_database_owner_operator_in_public_hijacks_run(actors: Actors, runner: str) -> None:
    """H2: the database owner -> superuser by an operator ``public.*(integer, numeric)`` that the
    invoker procedures' unqualified ``1000 * extract(...)`` resolve to, when the scheduled job (or
    ``pgretention entity run``) runs as the installing role with the default search_path."""
    db = actors.db
    make_app_entities(actors, due_leads=5)
    actors.add_dbowner()
    with actors.connect("dbown") as dbown:
        dbown.execute("CREATE FUNCTION public.int_num_mul(integer, numeric) RETURNS numeric LANGUAGE plpgsql AS $f$"
                      + payload(DB_OWNER, ret="$1::numeric OPERATOR(pg_catalog.*) $2") + "$f$")
        dbown.execute("CREATE OPERATOR public.* (LEFTARG = integer, RIGHTARG = numeric, FUNCTION = public.int_num_mul)")
    if runner == "cron_job":
        with db.connect() as installer_role:  # what the pg_cron job runs, as the installing role
            out = attempt(installer_role, "CALL pgretention.run(p_runner => 'cron')")
            detail = str(out)
    else:
        res = db.cli("entity", "run")
        detail = f"exit {res.returncode}: {res.stderr.strip()[-200:]}"
    require(db.one("SELECT count(*) FROM app.lead WHERE created_at < now() - interval '2 years'") == 0,
            f"the run reached the entity batches (else the attack was not exercised); run {detail}")
    assert actors.superusers() == [], f"database owner became superuser; run {detail}"


# H2, every pair: the types of the procedures' variables and values, and the operators that could
# apply to them. For each (operator, left, right) that pg_catalog lacks exactly, and would reach by
# an implicit cast, the database owner plants one in public that makes it a superuser.
H2_TYPES = ("integer", "bigint", "numeric", "double precision", "text", "name", "interval", "timestamptz",
            "jsonb", "boolean", "regclass", "oid", "text[]")
H2_OPERATORS = ("+", "-", "*", "/", "%", "^", "<", "<=", ">", ">=", "=", "<>", "||", "->", "->>", "?", "#>>")


def plant_operators(conn: psycopg.Connection[Any]) -> int:
    """As the database owner: one operator per missing exact (operator, left, right) in public, each
    an escalation payload. Returns how many. A payload that runs with superuser rights also counts
    itself in the sequence public.h2_hits and warns with its signature: a procedure that then fails
    on its (ill-typed) result rolls the escalation back, but a payload of the right type would not."""
    conn.execute("CREATE SEQUENCE public.h2_hits")
    do = sql.SQL(
        "DO $plant$ DECLARE n int := 0; o text; l text; r text; BEGIN"
        " FOREACH o IN ARRAY {ops}::text[] LOOP FOREACH l IN ARRAY {types}::text[] LOOP"
        " FOREACH r IN ARRAY {types}::text[] LOOP"
        "  CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_operator p WHERE p.oprname OPERATOR(pg_catalog.=) o"
        "   AND p.oprleft OPERATOR(pg_catalog.=) pg_catalog.to_regtype(l)"
        "   AND p.oprright OPERATOR(pg_catalog.=) pg_catalog.to_regtype(r));"
        "  n := n OPERATOR(pg_catalog.+) 1;"
        "  EXECUTE pg_catalog.format('CREATE FUNCTION public.h2_planted_%s(%s, %s) RETURNS boolean"
        "   LANGUAGE plpgsql AS %L', n, l, r, pg_catalog.replace({body}::text, 'BEGIN',"
        "   pg_catalog.format('BEGIN IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname"
        "    OPERATOR(pg_catalog.=) current_user) THEN PERFORM pg_catalog.nextval(''public.h2_hits'');"
        "    RAISE WARNING ''h2: %s(%s, %s) ran as a superuser''; END IF;', pg_catalog.replace(o, '%', '%%'), l, r)));"
        "  EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s,"
        "   FUNCTION = public.h2_planted_%s)', o, l, r, n);"
        " END LOOP; END LOOP; END LOOP;"
        " PERFORM pg_catalog.set_config('h2.planted', n::text, false); END $plant$"
    ).format(ops=sql.Literal(list(H2_OPERATORS)), types=sql.Literal(list(H2_TYPES)), body=sql.Literal(payload(DB_OWNER)))
    conn.execute(do)
    return int(conn.execute("SELECT current_setting('h2.planted')").fetchone()[0])  # type: ignore[index]


def test_h2_planted_operators_for_every_mixed_pair_all_procedures(actors: Actors) -> None:
    """H2, every pair: the database owner plants an operator for every pair of types the
    procedures' values could meet (H2_TYPES x H2_OPERATORS, wherever pg_catalog has no exact
    one); then the installing role, with search_path "$user", public, calls every procedure:
    run (every partition step, a lock wait and its retries, the housekeeping, the anonymiser and
    the entity engine), entity_run, anon_run, their deprecated names, and adopt."""
    db = actors.db
    make_cdr(db, months=8, rows=800, subject=True)
    db.execute("SELECT pgretention.hold_set('court order', 'COURT-1', 'phone', %s)", [phone(3)])
    make_sms_log(db, default_rows=300, days_back=10, anonymise_after="5 days")
    db.execute("SELECT pgretention.anon_rule_set('public.sms_log', 'sender', 'pseudonym')")
    make_app_entities(actors, due_leads=5)
    make_app_events(actors)
    db.execute("SELECT pgretention.setting_set('lock_retries', '3')")
    actors.add_dbowner()
    with actors.connect("dbown") as dbown:
        planted = plant_operators(dbown)
    require(planted > 1000, f"operators planted ({planted})")
    outs = []
    warnings: list[str] = []
    with db.connect() as installer_role, db.connect(autocommit=False) as reader:
        installer_role.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        installer_role.execute("SET search_path = \"$user\", public")
        # a report holding the sms_log default partition: the run retries, backs off, defers
        reader.execute("LOCK TABLE public.sms_log_default IN SHARE MODE")
        outs.append(attempt(installer_role, "CALL pgretention.run(p_table => 'public.sms_log', p_runner => 'cron')"))
        reader.rollback()
        for call in ("CALL pgretention.run(p_runner => 'cron')", "CALL pgretention.entity_run()",
                     "CALL pgretention.anon_run()", "CALL pgretention.run_entities()", "CALL pgretention.run_anonymiser()",
                     "CALL pgretention.adopt('app.events', 'at', '30 days', p_key => 'local')"):
            outs.append(attempt(installer_role, call))
        search_path = installer_role.execute("SHOW search_path").fetchone()
    cli = [db.cli(*args) for args in (("run",), ("entity", "run"), ("anonymise", "run"), ("plan",), ("status",))]
    with actors.connect("dbown") as dbown:  # nothing planted may meet the checks below
        hits = dbown.execute("SELECT last_value FROM public.h2_hits WHERE is_called").fetchall()
        dbown.execute("DROP SEQUENCE public.h2_hits")
        dbown.execute("DO $d$ DECLARE f regprocedure; BEGIN FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p"
                      " WHERE p.proname LIKE 'h2\\_planted\\_%' LOOP EXECUTE pg_catalog.format('DROP FUNCTION %s CASCADE', f);"
                      " END LOOP; END $d$")
    ran = [w for w in warnings if w.startswith("h2:")]
    assert actors.superusers() == [] and hits == [] and ran == [], \
        f"planted operators ran as a superuser ({hits}): {ran[:10]}; {[str(o) for o in outs]}"
    # every path ran (else the attack was not exercised)
    require(all(o.ok for o in outs), f"every procedure ran: {[str(o) for o in outs]}")
    require(all(c.returncode == 0 for c in cli), f"the CLI ran: {[c.stderr[-300:] for c in cli]}")
    require(db.one("SELECT count(*) FROM pgretention.adoption WHERE state = 'adopted'") == 1, "app.events adopted")
    statuses = db.all("SELECT status FROM pgretention.job_run ORDER BY id")
    require(db.one("SELECT count(*) FROM app.lead WHERE created_at < now() - interval '2 years'") == 0,
            f"the entity batches ran; {[str(o) for o in outs]}")
    require(db.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'") > 0, "the anonymiser rewrote")
    require(db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") > 0, "partitions dropped")
    require(("partial",) in statuses, f"a unit was deferred after its retries: {statuses}")
    assert search_path == ('"$user", public',), f"the caller's search_path changed: {search_path}"


def test_m3_renamed_subject_column_stops_every_engine(actors: Actors) -> None:
    """M3: the owner renames an identifier column of a registered table (with a subject hold
    active and an anonymise rule): plan, status and run fail for every table, the anonymiser and
    the entity engine never run."""
    db = actors.db
    classes = {"eu": {"drop_after": "6 months", "members": ["NL", "DE"]}, "sms": {"drop_after": "13 months", "members": ["SMS"]},
               "intl": {"drop_after": "24 months", "anonymise_after": "1 month"}}
    make_cdr(db, months=3, classes=classes, subject=True)
    db.execute("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'pseudonym')")
    db.execute("SELECT pgretention.hold_set('fraud investigation', 'COURT-1', 'phone', %s)", [phone(5)])
    make_app_entities(actors, due_leads=11)
    give_table(db, "public.cdr", actors["appowner"])
    with actors.connect("appowner") as own:  # an ordinary application migration
        own.execute("ALTER TABLE public.cdr RENAME COLUMN callee TO b_number")
    with actors.connect("op") as op:
        run = attempt(op, "CALL pgretention.run()")
        plan = attempt(op, "SELECT count(*) FROM pgretention.plan()")
        status = attempt(op, "SELECT count(*) FROM pgretention.status()")
    due_left = db.one("SELECT count(*) FROM app.lead WHERE created_at < now() - interval '2 years'")
    assert due_left == 0, f"entity engine never ran ({due_left} due leads left); run {run}"
    assert plan.ok and status.ok, f"plan {plan}; status {status}"


def test_m3_dropped_subject_table_blocks_every_request(actors: Actors) -> None:
    """M3: the owner drops a registered table; every erasure request with a phone identifier then
    fails for all tables (and there is no way to unregister it)."""
    db = actors.db
    make_cdr(db, months=1, rows=200, subject=True)
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.customer (id int PRIMARY KEY, phone text)")
        own.execute("INSERT INTO app.customer VALUES (1, %s)", [phone(7)])
    db.execute("SELECT pgretention.subject_table_register('app.customer', '{\"phone\": \"phone\"}')")
    before = db.one("SELECT count(*) FROM public.cdr WHERE %s IN (caller, callee)", [phone(7)])
    require(before > 0, "the cdr has rows of the number")
    with actors.connect("appowner") as own:
        own.execute("DROP TABLE app.customer")
    with actors.connect("op") as op:
        out = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                      [Jsonb({"phone": phone(7)})])
    left = db.one("SELECT count(*) FROM public.cdr WHERE %s IN (caller, callee)", [phone(7)])
    assert left == 0, f"erasure blocked by a dropped table: {left} of {before} rows kept; request {out}"


def test_m7_renamed_managed_table_silently_leaves_retention(actors: Actors) -> None:
    """M7: the owner renames a managed table; status, plan, run and report stay 'ok' and its
    expired partitions are never dropped. Fixed means: followed (the expired rows go) or flagged
    (a finding about it, or a run that is not 'ok')."""
    db = actors.db
    make_ledger(actors, rows=100, days_ago=10)
    db.execute("SELECT pgretention.table_manage('app.ledger', 'at', '1 day', '{\"d\": {\"drop_after\": \"1 day\"}}')")
    with actors.connect("appowner") as own:
        own.execute("ALTER TABLE app.ledger RENAME TO ledger_renamed")
    with actors.connect("op") as op:
        run = attempt(op, "CALL pgretention.run()")
        findings = attempt(op, "SELECT severity, object, message FROM pgretention.report_findings()")
    rows_left = db.one("SELECT count(*) FROM app.ledger_renamed")
    status = db.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1")
    flagged = [f for f in findings.rows if f[0] in ("violation", "warning") and "ledger" in f"{f[1]} {f[2]}"]
    assert rows_left == 0 or flagged or status != "ok" or not run.ok, \
        f"{rows_left} expired rows kept silently: run {run} status {status}, findings {findings}"


def test_m3_broken_table_is_reported_and_the_run_goes_on(actors: Actors) -> None:
    """M3, the run's part: with an identifier column of a registered table renamed under a subject
    hold, the run names that table in its errors (and removes nothing of it), and goes on: another
    table is anonymised, the entity engine deletes its due leads."""
    db = actors.db
    classes = {"eu": {"drop_after": "6 months", "members": ["NL", "DE"]}, "sms": {"drop_after": "13 months", "members": ["SMS"]},
               "intl": {"drop_after": "24 months", "anonymise_after": "1 month"}}
    make_cdr(db, months=8, rows=800, classes=classes, subject=True)
    db.execute("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'pseudonym')")
    db.execute("SELECT pgretention.hold_set('fraud investigation', 'COURT-1', 'phone', %s)", [phone(5)])
    make_sms_log(db, default_rows=0, days_back=10, anonymise_after="5 days")
    db.execute("SELECT pgretention.anon_rule_set('public.sms_log', 'sender', 'pseudonym')")
    make_app_entities(actors, due_leads=11)
    give_table(db, "public.cdr", actors["appowner"])
    cdr_rows = db.one("SELECT count(*) FROM public.cdr")
    with actors.connect("appowner") as own:  # an ordinary application migration
        own.execute("ALTER TABLE public.cdr RENAME COLUMN callee TO b_number")
    with actors.connect("op") as op:
        run = attempt(op, "CALL pgretention.run()")
    status, summary = db.all("SELECT status, summary FROM pgretention.job_run WHERE engine = 'run' ORDER BY id DESC LIMIT 1")[0]
    errors = summary["errors"]
    assert run.ok, f"run {run}"
    assert status == "failed" and errors and all("public.cdr" in e.get("table", "") for e in errors), errors
    assert any("callee" in e["error"] for e in errors), errors
    # expired partitions may be detached (they are out of the live table), but none is dropped while
    # its held rows cannot be told apart: every row is still in the table or a detached partition
    pending = [r[0] for r in db.all("SELECT format('%I.%I', partition_schema, partition_name) FROM pgretention.partition_op"
                                    " WHERE state = 'detached'")]
    kept = db.one("SELECT count(*) FROM public.cdr") + sum(
        db.one(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(p))) for p in pending)
    assert kept == cdr_rows, f"rows of the broken table removed: {cdr_rows} -> {kept}"
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done' AND partition_name LIKE 'sms_log%'") > 0
    assert db.one("SELECT count(*) FROM app.lead WHERE created_at < now() - interval '2 years'") == 0
