"""H1, M1, L1: the operator calls the helpers granted to it for ``run()`` directly.

``run()`` refuses a reference time in the future and respects retention periods, notice periods
and legal holds; the helpers it calls trust their arguments. Each test performs one step of the
review's H1 reproduction (logged in as the operator) and measures that no protected row changed.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import (
    Actors,
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
    "detach_leaf": ("pgretention", "_detach_leaf"),
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
}

UTC = timezone.utc


def call(key: str, args: str) -> sql.Composed:
    """``SELECT <internal function>(<args>)``; args is a placeholder list such as ``%s, 'eu'``."""
    return sql.SQL("SELECT {}(" + args + ")").format(sql.Identifier(*INTERNAL[key]))


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
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
        outs = [attempt(op, call("detach_leaf", "%s, 'eu', %s::regclass, 0, 1"), [tid, leaf]) for leaf in targets]
        outs.append(attempt(op, call("finish_op", "id") + sql.SQL(" FROM pgretention.partition_op WHERE state = 'detached'")))
    after = db.one("SELECT count(*) FROM public.cdr WHERE region IN ('NL', 'DE')")
    assert after == eu_rows and class_leaves(db, "public.cdr", "NL") == targets, \
        f"eu rows {eu_rows} -> {after}, partitions {len(targets)} -> {len(class_leaves(db, 'public.cdr', 'NL'))}; {outs[0]}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
def test_h1_2_default_partition_emptied(actors: Actors) -> None:
    """H1 #2: ``_purge_default_batch`` with reference time 'infinity' deletes every row of a
    default partition (rows within their 90 days)."""
    db = actors.db
    tid = make_sms_log(db, default_rows=500)
    with actors.connect("op") as op:
        out = attempt(op, call("purge_default_batch", "%s, 'default', 'infinity', 100000"), [tid])
    assert db.one("SELECT count(*) FROM public.sms_log") == 500, f"default rows deleted; attack {out}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
def test_h1_3_entity_notice_period_skipped(actors: Actors) -> None:
    """H1 #3: ``_entity_prepare`` / ``_entity_batch`` at 2100 list the notices 'in 2100' and delete
    accounts active yesterday with their contacts, the notice period skipped."""
    db = actors.db
    rules = make_app_entities(actors, accounts=30)
    with actors.connect("op") as op:
        outs = [attempt(op, call("entity_prepare", "%s, '2100-01-01'"), [rules["accounts"]]),
                attempt(op, call("entity_prepare", "%s, '2100-03-01'"), [rules["accounts"]]),
                attempt(op, call("entity_batch", "%s, '2100-03-01', 0, 100000, 0"), [rules["accounts"]])]
    counts = db.all("SELECT (SELECT count(*) FROM app.account), (SELECT count(*) FROM app.contact)")[0]
    assert counts == (30, 60), f"accounts, contacts (30, 60) -> {counts}; batch {outs[-1]}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
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
    row = db.all("SELECT sender, body FROM public.sms_log WHERE id = 1")
    assert row == [("+31612340001", "see you at 8")], f"row of today rewritten: {row}; {[str(o) for o in outs]}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
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


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
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
    assert db.one("SELECT count(*) FROM pgretention.hold_store") == stored, f"hold store purged; attack {out}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
def test_h1_7_proofs_of_fulfilment_deleted(actors: Actors) -> None:
    """H1 #7: ``_purge_request_proofs('infinity')`` deletes the proofs of fulfilled requests
    (kept 5 years)."""
    db = actors.db
    for i in range(3):
        db.execute("SELECT pgretention.request_fulfil(pgretention.request_create('access', %s))",
                   [Jsonb({"phone": phone(i)})])
    with actors.connect("op") as op:
        out = attempt(op, call("purge_request_proofs", "'infinity'"))
    assert db.one("SELECT count(*) FROM pgretention.subject_request") == 3, f"proofs deleted; attack {out}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
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


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H1: fixed by issue 17")
def test_h1_8_premake_moved_to_2100(actors: Actors) -> None:
    """H1 #8: ``_premake(..., '2100-01-01')`` creates partitions in 2100; the grid continues from
    there and later premakes create nothing for the coming days (new rows go to the default
    partition)."""
    db = actors.db
    tid = make_sms_log(db, default_rows=0)
    with actors.connect("op") as op:
        out = attempt(op, call("premake", "%s, 'default', '2100-01-01'"), [tid])
    far = [leaf for leaf, bound in leaves(db, "public.sms_log") if "2100-" in bound or "2099-" in bound]
    assert far == [], f"partitions premade in 2100: {far}; attack {out}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="L1: fixed by issue 17")
def test_l1_premake_infinity_loops(actors: Actors) -> None:
    """L1: ``_premake(id, class, 'infinity')`` never ends (its grid loop runs until the statement
    timeout): a CPU and memory denial of service of one backend by the operator."""
    db = actors.db
    tid = make_sms_log(db, default_rows=0)
    with actors.connect("op") as op:
        op.execute("SET statement_timeout = '5s'")
        t0 = time.monotonic()
        out = attempt(op, call("premake", "%s, 'default', 'infinity'"), [tid])
        took = time.monotonic() - t0
    assert not isinstance(out.error, psycopg.errors.QueryCanceled), f"loop ran into statement_timeout after {took:.1f} s"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="M1: fixed by issue 17")
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
