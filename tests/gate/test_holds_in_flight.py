"""Holds set while a destructive act is in flight (findings 2 and 5, issue 18).

A hold set while the act runs must either wait for it or be seen by it, never neither. The runs are
made to wait deterministically: a second connection holds a lock (a long report) so that the run
blocks on its DDL; the test waits until ``pg_locks`` shows the run waiting, sets the hold from a third
connection (which may itself wait: then the act went first, which is allowed), then releases the lock.
Whether the act went first is read from the order of the audit records.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run
from tests.gate.conftest import UTC, audit_ids, create_sms, surviving
from tests.gate.sessions import Session, reader, wait_until, waits_on_lock

# Internal names this file relies on (update here when internals are renamed).
INTERNAL = {
    "lock_timeout": "lock_timeout",        # setting: how long one DDL attempt waits for its lock
    "anon_ops": "pgretention.anon_op",     # the anonymiser's operations (partition, state)
}


def _long_lock_waits(db: DB) -> None:
    """One DDL attempt waits up to a minute: the run's wait stays visible in pg_locks."""
    db.execute("SELECT pgretention.setting_set(%s, '60s')", [INTERNAL["lock_timeout"]])


# -- finding 2a: a table hold set while the run waits for its lock -----------------------------------
def test_02a_table_hold_set_while_the_run_waits_is_honoured(engine: DB) -> None:
    """A regulator's table hold set while the run waits on a reader keeps the held partition."""
    db = engine
    partition = create_sms(db)
    _long_lock_waits(db)
    with reader(db, "public.sms"):
        runner = Session(db, "CALL pgretention.run(p_runner => 'test')").start()
        wait_until(lambda: waits_on_lock(db, runner.pid, "public.sms"), "the run to wait for its lock on public.sms")
        hold = Session(db, "SELECT pgretention.hold_set('regulator audit', 'REG-9', p_table => 'public.sms',"
                           " p_from => now() - interval '60 days', p_to => now())").start()
        wait_until(lambda: hold.finished_or_waiting(db), "hold_set to finish or wait")
    hold.result()
    runner.result()
    set_at = audit_ids(db, "hold.set")
    dropped = audit_ids(db, "partition.drop", "details ->> 'partition' = %s", [partition])
    if dropped and dropped[0] < set_at[0]:
        return  # the hold waited for the drop: it never covered these rows
    assert surviving(db, "public.sms", partition=partition) == 5, (set_at, dropped)


# -- finding 2b: a table hold set while a detached partition waits for its drop ----------------------
@pytest.mark.xfail(strict=True, reason="finding 2: issue 18")
def test_02b_table_hold_on_a_partition_pending_its_drop_is_honoured(engine: DB) -> None:
    """A partition detached but not yet dropped (a DBA's view depended on it) is not dropped once a
    table hold covers it."""
    db = engine
    partition = create_sms(db)
    db.execute(f"CREATE VIEW investigation AS SELECT * FROM {partition}")  # noqa: S608 (test-owned name)
    first = run(db)
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'detached'") == 1, first
    db.execute("SELECT pgretention.hold_set('lawful disclosure order', 'ORD-77', p_table => 'public.sms',"
               " p_from => now() - interval '40 days', p_to => now())")
    db.execute("DROP VIEW investigation")
    run(db)
    assert surviving(db, "public.sms", partition=partition) == 5
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'"
                  " AND details ->> 'partition' = %s", [partition]) == 0


# -- finding 5: a subject hold set while the anonymiser runs ----------------------------------------
def test_05_subject_hold_set_while_the_anonymiser_runs_is_honoured(engine: DB) -> None:
    """A disclosure order on a caller, set while the anonymiser waits on a reader, keeps that caller's
    call in clear (the rewrite of its partition starts after the hold)."""
    db = engine
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    db.execute(
        "SELECT pgretention.table_create('public.calls', 'id bigint, started_at timestamptz, caller text, callee text',"
        " 'started_at', '1 day', %s, p_start => %s)",
        [Jsonb({"all": {"drop_after": "60 days", "anonymise_after": "10 days"}}), day - timedelta(days=20)])
    db.execute("SELECT pgretention.anon_rule_set('public.calls', 'caller', 'pseudonym');"
               "SELECT pgretention.anon_rule_set('public.calls', 'callee', 'e164_prefix', '4');"
               "SELECT pgretention.anon_rule_set('public.calls', 'id', 'keep');"
               "SELECT pgretention.subject_table_register('public.calls', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    # 100 calls 15 days ago: several empty partitions (20 to 16 days ago) are rewritten before theirs
    db.execute("INSERT INTO calls SELECT g, %s::timestamptz + g * interval '1 minute', '+3161234' || lpad(g::text, 4, '0'),"
               " '+31699999999' FROM generate_series(1, 100) g", [day - timedelta(days=15)])
    held = "+31612340007"
    partition = db.one("SELECT tableoid::regclass::text FROM calls WHERE caller = %s", [held])
    _long_lock_waits(db)
    with reader(db, "public.calls"):
        runner = Session(db, "CALL pgretention.run(p_runner => 'test')").start()
        wait_until(lambda: waits_on_lock(db, runner.pid, "public.calls"), "the anonymiser's swap to wait for its lock")
        ops = db.all(f"SELECT partition_name FROM {INTERNAL['anon_ops']}")  # noqa: S608
        assert partition not in {o[0] for o in ops}, "the held row's partition is already being rewritten"
        hold = Session(db, "SELECT pgretention.hold_set('disclosure order', 'ORD-5', 'phone', %s)", [held]).start()
        wait_until(lambda: hold.finished_or_waiting(db), "hold_set to finish or wait")
    hold.result()
    runner.result()
    set_at = audit_ids(db, "hold.set")
    rewritten = audit_ids(db, "partition.anonymise", "details ->> 'partition' = %s", [partition])
    if rewritten and rewritten[0] < set_at[0]:
        return  # the hold waited for the rewrite
    row = db.all("SELECT caller, callee FROM calls WHERE id = 7")
    assert row == [(held, "+31699999999")], (row, set_at, rewritten)
