"""H1, M1, L1: the operator calls the helpers granted to it for ``run()`` directly.

``run()`` refuses a reference time in the future and respects retention periods, notice periods
and legal holds; the helpers it called trusted their arguments. Each test performs one step of the
review's H1 reproduction (logged in as the operator) and measures that no protected row changed.

The helpers that do the work are now granted to no one; a run reaches them through entry points
that take a run's id (the run token: a job_run row running in the caller's backend) and use the
run's reference time. Each test therefore attacks twice: the review's call of the internal
function by name, and the same step through the granted entry point with the strongest token the
operator can hold, a run of its own (``_job_begin`` is granted to it, for ``run()``).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import (
    Actors,
    Outcome,
    attempt,
    class_leaves,
    leaves,
    make_app_entities,
    make_cdr,
    make_sms_log,
    phone,
    require,
)

# Internal functions the attacks call by name (update here when internals are renamed).
INTERNAL = {
    "detach_leaf": ("pgretention", "_detach_leaf"),  # (table, class, leaf, now, run, attempts)
    "finish_op": ("pgretention", "_finish_op"),
    "purge_default_batch": ("pgretention", "_purge_default_batch"),
    "entity_prepare": ("pgretention", "_entity_prepare"),
    "entity_batch": ("pgretention", "_entity_batch"),
    "anon_prepare": ("pgretention", "_anon_prepare"),
    "anon_copy": ("pgretention", "_anon_copy"),
    "anon_swap": ("pgretention", "_anon_swap"),
    "anon_finish": ("pgretention", "_anon_finish"),
    "purge_released_holds": ("pgretention", "_purge_released_holds"),
    "purge_request_proofs": ("pgretention", "_purge_request_proofs"),
    "premake": ("pgretention", "_premake"),
    # the granted entry points of a run (they take the run's id)
    "job_begin": ("pgretention", "_job_begin"),  # (runner, reference time, engine, target) -> run id
    "job_end": ("pgretention", "_job_end"),  # (run, deferred units)
    "run_step": ("pgretention", "_run_step"),  # (run, step, table, class, leaf, op, attempt)
    "anon_step": ("pgretention", "_anon_step"),  # (run, step, op, table, class, leaf)
    "entity_run_prepare": ("pgretention", "_entity_run_prepare"),  # (run, rule)
    "entity_run_batch": ("pgretention", "_entity_run_batch"),  # (run, rule, pass, limit)
}

UTC = timezone.utc


def call(key: str, args: str) -> sql.Composed:
    """``SELECT <internal function>(<args>)``; args is a placeholder list such as ``%s, 'eu'``."""
    return sql.SQL("SELECT {}(" + args + ")").format(sql.Identifier(*INTERNAL[key]))


def own_run(conn: psycopg.Connection[Any], engine: str = "run", at: str | None = None) -> tuple[int | None, Outcome]:
    """A run of the attacker's own, begun in its session (at reference time ``at``: refused unless
    it is the clock): the id, or None when refused."""
    out = attempt(conn, call("job_begin", "'sql', %s::timestamptz, %s, NULL"), [at, engine])
    return (int(out.rows[0][0]) if out.ok else None), out


def test_h1_1_detach_live_partitions_under_table_hold(actors: Actors) -> None:
    """H1 #1: ``_detach_leaf`` + ``_finish_op`` drop every live partition of class eu (rows well
    within 6 months) while a legal hold on the whole table is active."""
    db = actors.db
    tid = make_cdr(db, months=3)
    db.execute("SELECT pgretention.hold_set('court order', 'COURT-1', p_table => 'public.cdr')")
    targets = class_leaves(db, "public.cdr", "NL")
    eu_rows = db.one("SELECT count(*) FROM public.cdr WHERE region IN ('NL', 'DE')")
    require(len(targets) >= 4 and eu_rows > 0, f"live eu partitions with rows ({targets}, {eu_rows} rows)")
    with actors.connect("op") as op:
        outs = [attempt(op, call("detach_leaf", "%s, 'eu', %s::regclass, now(), 0, 1"), [tid, leaf]) for leaf in targets]
        outs.append(attempt(op, call("finish_op", "id") + sql.SQL(" FROM pgretention.partition_op WHERE state = 'detached'")))
        run, begun = own_run(op)
        outs.append(begun)
        for leaf in targets:
            outs.append(attempt(op, call("run_step", "%s, 'detach', %s, 'eu', %s::regclass, NULL, 1"), [run, tid, leaf]))
        outs.append(attempt(op, call("run_step", "%s, 'finish', NULL, NULL, NULL, o.id, 1")
                            + sql.SQL(" FROM pgretention.partition_op o WHERE o.state = 'detached'"), [run]))
    after = db.one("SELECT count(*) FROM public.cdr WHERE region IN ('NL', 'DE')")
    assert after == eu_rows and class_leaves(db, "public.cdr", "NL") == targets, \
        f"eu rows {eu_rows} -> {after}, partitions {len(targets)} -> {len(class_leaves(db, 'public.cdr', 'NL'))}; {outs[0]}"


def test_h1_2_default_partition_emptied(actors: Actors) -> None:
    """H1 #2: ``_purge_default_batch`` with reference time 'infinity' deletes every row of a
    default partition (rows within their 90 days)."""
    db = actors.db
    tid = make_sms_log(db, default_rows=500)
    with actors.connect("op") as op:
        out = attempt(op, call("purge_default_batch", "%s, 'default', 'infinity', 100000"), [tid])
        outs = [out]
        for at in ("infinity", "2100-01-01", None):
            run, begun = own_run(op, at=at)
            outs.append(begun)
            if run is not None:
                outs.append(attempt(op, call("run_step", "%s, 'default', %s, 'default', NULL, NULL, 1"), [run, tid]))
    assert db.one("SELECT count(*) FROM public.sms_log") == 500, f"default rows deleted; attack {[str(o) for o in outs]}"


def test_h1_3_entity_notice_period_skipped(actors: Actors) -> None:
    """H1 #3: ``_entity_prepare`` / ``_entity_batch`` at 2100 list the notices 'in 2100' and delete
    accounts active yesterday with their contacts, the notice period skipped."""
    db = actors.db
    rules = make_app_entities(actors, accounts=30)
    with actors.connect("op") as op:
        outs = [attempt(op, call("entity_prepare", "%s, '2100-01-01'"), [rules["accounts"]]),
                attempt(op, call("entity_prepare", "%s, '2100-03-01'"), [rules["accounts"]]),
                attempt(op, call("entity_batch", "%s, '2100-03-01', 0, 100000, 0"), [rules["accounts"]])]
        for at in ("2100-01-01", "2100-03-01", None):
            run, begun = own_run(op, "entity", at)
            outs.append(begun)
            if run is not None:
                outs.append(attempt(op, call("entity_run_prepare", "%s, %s"), [run, rules["accounts"]]))
                outs.append(attempt(op, call("entity_run_batch", "%s, %s, 0, 100000"), [run, rules["accounts"]]))
    counts = db.all("SELECT (SELECT count(*) FROM app.account), (SELECT count(*) FROM app.contact)")[0]
    assert counts == (30, 60), f"accounts, contacts (30, 60) -> {counts}; batch {outs[-1]}"


def test_h1_4_todays_partition_anonymised(actors: Actors) -> None:
    """H1 #4: ``_anon_prepare`` / copy / swap / finish rewrite today's partition anonymised
    (anonymise_after 30 days): irreversible."""
    db = actors.db
    tid = make_sms_log(db, default_rows=0, anonymise_after="30 days")
    db.execute("SELECT pgretention.anon_rule_set('public.sms_log', 'sender', 'pseudonym');"
               "SELECT pgretention.anon_rule_set('public.sms_log', 'body', 'redact')")
    db.execute("INSERT INTO public.sms_log VALUES (1, now(), '+31612340001', 'see you at 8')")
    leaf = db.one("SELECT tableoid::regclass::text FROM public.sms_log WHERE id = 1")
    with actors.connect("op") as op:
        prep = attempt(op, call("anon_prepare", "%s, 'default', %s::regclass, now()"), [tid, leaf])
        outs = [prep]
        if prep.ok and prep.rows and prep.rows[0][0] is not None:
            for step in ("anon_copy", "anon_swap", "anon_finish"):
                outs.append(attempt(op, call(step, "%s"), [prep.rows[0][0]]))
        run, begun = own_run(op, "anonymiser")
        outs.append(begun)
        prep = attempt(op, call("anon_step", "%s, 'prepare', NULL, %s, 'default', %s::regclass"), [run, tid, leaf])
        outs.append(prep)
        ops = [prep.rows[0][0]] if prep.ok and prep.rows and prep.rows[0][0] else []
        ops += [r[0] for r in db.all("SELECT id FROM pgretention.anon_op WHERE state <> 'done'")]
        for o in ops:
            for step in ("copy", "swap", "finish"):
                outs.append(attempt(op, call("anon_step", "%s, %s, %s"), [run, step, o]))
    row = db.all("SELECT sender, body FROM public.sms_log WHERE id = 1")
    assert row == [("+31612340001", "see you at 8")], f"row of today rewritten: {row}; {[str(o) for o in outs]}"


def test_h1_5_erasure_through_hold_with_end_date(actors: Actors) -> None:
    """H1 #5: ``request_fulfil`` with a reference time two years ahead erases rows under a legal
    hold that ends in one year (and records the fulfilment in the future)."""
    db = actors.db
    make_cdr(db, months=3, subject=True)
    db.execute("SELECT pgretention.hold_set('court order', 'COURT-9', 'phone', %s, p_ends_at => now() + interval '1 year')",
               [phone(2)])
    held = db.one("SELECT count(*) FROM public.cdr WHERE %s IN (caller, callee)", [phone(2)])
    require(held > 0, "rows of the held number exist")
    with actors.connect("op") as op:
        out = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s),"
                          " now() + interval '2 years')", [Jsonb({"phone": phone(2)})])
    after = db.one("SELECT count(*) FROM public.cdr WHERE %s IN (caller, callee)", [phone(2)])
    assert after == held, f"held rows {held} -> {after}; attack {out}"


def test_h1_6_hold_store_purged_early(actors: Actors) -> None:
    """H1 #6: ``_purge_released_holds('2100-01-01')`` deletes rows kept in the hold store for an
    active hold (it ends in one year)."""
    db = actors.db
    make_cdr(db, months=8, rows=600, subject=True)
    held_phone = db.one("SELECT caller FROM public.cdr WHERE region IN ('NL', 'DE')"
                        " AND started_at < now() - interval '7 months' LIMIT 1")
    db.execute("SELECT pgretention.hold_set('court order', 'COURT-9', 'phone', %s, p_ends_at => now() + interval '1 year')",
               [held_phone])
    db.execute("CALL pgretention.run()")  # expired eu partitions go; the held rows move to the hold store
    stored = db.one("SELECT count(*) FROM pgretention.hold_store")
    require(stored > 0, "the run kept held rows in the hold store")
    with actors.connect("op") as op:
        out = attempt(op, call("purge_released_holds", "'2100-01-01'"))
        outs = [out]
        for at in ("2100-01-01", None):
            run, begun = own_run(op, at=at)
            outs.append(begun)
            outs.append(attempt(op, call("run_step", "%s, 'hold store', NULL, NULL, NULL, NULL, 1"), [run]))
    assert db.one("SELECT count(*) FROM pgretention.hold_store") == stored, \
        f"hold store purged; attack {[str(o) for o in outs]}"


def test_h1_7_proofs_of_fulfilment_deleted(actors: Actors) -> None:
    """H1 #7: ``_purge_request_proofs('infinity')`` deletes the proofs of fulfilled requests
    (kept 5 years)."""
    db = actors.db
    for i in range(3):
        db.execute("SELECT pgretention.request_fulfil(pgretention.request_create('access', %s))",
                   [Jsonb({"phone": phone(i)})])
    with actors.connect("op") as op:
        out = attempt(op, call("purge_request_proofs", "'infinity'"))
        outs = [out]
        for at in ("infinity", "2100-01-01", None):
            run, begun = own_run(op, at=at)
            outs.append(begun)
            outs.append(attempt(op, call("run_step", "%s, 'request proofs', NULL, NULL, NULL, NULL, 1"), [run]))
    assert db.one("SELECT count(*) FROM pgretention.subject_request") == 3, \
        f"proofs deleted; attack {[str(o) for o in outs]}"


def test_h1_7_fulfilment_backdated_before_deadline(actors: Actors) -> None:
    """H1 #7: ``request_fulfil`` with a reference time 80 days back records an overdue request as
    fulfilled before its deadline."""
    db = actors.db
    rid = db.one("SELECT pgretention.request_create('access', %s, p_received => now() - interval '40 days')",
                 [Jsonb({"phone": phone(1)})])
    started = datetime.now(UTC)
    with actors.connect("op") as op:
        out = attempt(op, "SELECT pgretention.request_fulfil(%s, now() - interval '80 days')", [rid])
    fulfilled, due = db.all("SELECT fulfilled_at, due_at FROM pgretention.subject_request WHERE id = %s", [rid])[0]
    assert fulfilled is None or fulfilled >= started - timedelta(minutes=1), \
        f"fulfilled_at {fulfilled} back-dated (due {due}); attack {out}"


def test_h1_8_premake_moved_to_2100(actors: Actors) -> None:
    """H1 #8: ``_premake(..., '2100-01-01')`` creates partitions in 2100; the grid continues from
    there and later premakes create nothing for the coming days (new rows go to the default
    partition)."""
    db = actors.db
    tid = make_sms_log(db, default_rows=0)
    with actors.connect("op") as op:
        out = attempt(op, call("premake", "%s, 'default', '2100-01-01'"), [tid])
        outs = [out]
        run, begun = own_run(op, at="2100-01-01")
        outs.append(begun)
        outs.append(attempt(op, call("run_step", "%s, 'premake', %s, 'default', NULL, NULL, 1"), [run, tid]))
    far = [leaf for leaf, bound in leaves(db, "public.sms_log") if "2100-" in bound or "2099-" in bound]
    assert far == [], f"partitions premade in 2100: {far}; attack {[str(o) for o in outs]}"


def test_l1_premake_infinity_loops(actors: Actors) -> None:
    """L1: ``_premake(id, class, 'infinity')`` never ends (its grid loop runs until the statement
    timeout): a CPU and memory denial of service of one backend by the operator. Also as the
    installing role (who may call it, and may simulate): refused at once."""
    db = actors.db
    tid = make_sms_log(db, default_rows=0)
    outs = []
    with actors.connect("op") as op, db.connect() as installer_role:
        installer_role.execute("SELECT pgretention.simulation_enable()")
        for conn in (op, installer_role):
            conn.execute("SET statement_timeout = '5s'")
            t0 = time.monotonic()
            outs.append(attempt(conn, call("premake", "%s, 'default', 'infinity'"), [tid]))
            run, begun = own_run(conn, at="infinity")
            outs.append(begun)
            outs.append(attempt(conn, call("run_step", "%s, 'premake', %s, 'default', NULL, NULL, 1"), [run, tid]))
            took = time.monotonic() - t0
    timed_out = [str(o) for o in outs if isinstance(o.error, psycopg.errors.QueryCanceled)]
    assert not timed_out, f"loop ran into statement_timeout ({took:.1f} s for the last attempts): {timed_out}"


def test_m1_operator_bulk_lookup_unaudited(actors: Actors) -> None:
    """M1: the operator reads every registered row for 1000 phone numbers through ``subject_rows``
    with no request and no audit record."""
    db = actors.db
    make_cdr(db, months=3, rows=600, subject=True)
    before = db.one("SELECT count(*) FROM pgretention.audit_log")
    with actors.connect("op") as op:
        out = attempt(op, "SELECT count(*) FROM pgretention.subject_rows(jsonb_build_object('phone',"
                          " (SELECT jsonb_agg('+3161234' || lpad(g::text, 4, '0')) FROM generate_series(0, 999) g)))")
    read = out.rows[0][0] if out.ok else 0
    audited = db.one("SELECT count(*) FROM pgretention.audit_log") - before
    assert read == 0 or audited > 0, f"operator read {read} rows of personal data, {audited} audit records written"


def test_m1_reading_through_a_request_is_audited(actors: Actors) -> None:
    """M1: the operator reads a subject's rows through an access request of its own
    (``subject_rows(request)``): it may, and every read leaves an audit record with the count."""
    db = actors.db
    make_cdr(db, months=3, rows=600, subject=True)
    expected = db.one("SELECT count(*) FROM public.cdr WHERE %s IN (caller, callee)", [phone(3)])
    require(expected > 0, "rows of the number exist")
    with actors.connect("op") as op:
        rid = op.execute("SELECT pgretention.request_create('access', %s)", [Jsonb({"phone": phone(3)})]).fetchone()[0]
        read = op.execute("SELECT count(*) FROM pgretention.subject_rows(%s::bigint)", [rid]).fetchone()[0]
        export = op.execute("SELECT pgretention.request_export(%s)", [rid]).fetchone()[0]
    records = db.all("SELECT action, (details ->> 'rows_read')::bigint, session_role::text FROM pgretention.audit_log"
                     " WHERE action IN ('request.read', 'request.export') AND (details ->> 'request')::bigint = %s"
                     " ORDER BY id", [rid])
    assert read == expected and len(export["tables"]["public.cdr"]) == expected
    assert records == [("request.read", expected, actors["op"]), ("request.export", expected, actors["op"])], records


def test_simulated_time_is_the_installing_roles_in_its_session(actors: Actors) -> None:
    """Simulated time (reference times other than the clock) is allowed only in a session in which
    the installing role enabled it: not by the admin (no setting, no grant), not for the operator,
    not in another session of the installing role; the default partition keeps its rows."""
    db = actors.db
    tid = make_sms_log(db, default_rows=500)
    with db.connect() as simulating:
        simulating.execute("SELECT pgretention.simulation_enable()")
        require(attempt(simulating, call("job_begin", "'sql', '2100-01-01', 'run', NULL")).ok,
                "the installing role simulates in its session")
        outs = []
        with actors.connect("adm") as adm:
            outs.append(attempt(adm, "SELECT pgretention.setting_set('allow_future_reference_time', 'on')"))
            outs.append(attempt(adm, "SELECT pgretention.simulation_enable()"))
            run, begun = own_run(adm, at="2100-01-01")
            outs += [begun, attempt(adm, call("run_step", "%s, 'default', %s, 'default', NULL, NULL, 1"), [run, tid])]
        with actors.connect("op") as op:
            outs.append(attempt(op, "SELECT pgretention.simulation_enable()"))
            outs.append(attempt(op, "CALL pgretention.run('2100-01-01')"))
        with db.connect() as other_session:
            outs.append(attempt(other_session, "CALL pgretention.run('2100-01-01')"))
    assert all(not o.ok for o in outs), [str(o) for o in outs]
    assert db.one("SELECT count(*) FROM public.sms_log") == 500


def test_run_token_is_bound_to_its_session(actors: Actors) -> None:
    """The installing role's simulated run at 2100 is running in its session: the operator cannot
    use its id from its own session (nor after it ended)."""
    db = actors.db
    tid = make_sms_log(db, default_rows=500)
    outs = []
    with db.connect() as simulating, actors.connect("op") as op:
        simulating.execute("SELECT pgretention.simulation_enable()")
        run = simulating.execute(call("job_begin", "'sql', '2100-01-01', 'run', NULL")).fetchone()[0]
        outs.append(attempt(op, call("run_step", "%s, 'default', %s, 'default', NULL, NULL, 1"), [run, tid]))
        outs.append(attempt(op, call("job_end", "%s, %s"), [run, Jsonb({})]))
        simulating.execute(call("job_end", "%s, %s"), [run, Jsonb({})])
        outs.append(attempt(simulating, call("run_step", "%s, 'default', %s, 'default', NULL, NULL, 1"), [run, tid]))
    assert all(not o.ok and "not running in this session" in str(o) for o in outs), [str(o) for o in outs]
    assert db.one("SELECT count(*) FROM public.sms_log") == 500
