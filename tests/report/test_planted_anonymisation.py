"""Planted anonymisation failures and lags (findings 13, 14 and 15, issue 19): a failed rewrite
reaches the run's status and the report and is undone or finished by the next run; rows past
anonymise_after in default partitions are anonymised, and a lag is a violation; ``class set`` never
clears a period it was not given."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run
from tests.gate.sessions import Session, wait_until, waits_on_lock
from tests.report.conftest import assert_clean, check_exit, findings, heartbeat, violations

UTC = timezone.utc
CLEAR = "+3161234%"  # callers in clear

# Internal names this file relies on (update here when internals are renamed).
INTERNAL = {
    "lock_timeout": "lock_timeout",          # setting: how long one DDL attempt waits for its lock
    "anon_ops": "pgretention.anon_op",       # the anonymiser's operations (state: prepared, swapped, done)
    "capture_trigger": "pgr_anon_capture",   # trigger on a partition being rewritten
}


def _day() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _calls(db: DB, *, start: datetime | None = None) -> None:
    """public.calls: kept 60 days, anonymised after 10; rules for every column; the caller registered."""
    db.execute("SELECT pgretention.table_create('public.calls', 'id bigint, started_at timestamptz, caller text,"
               " callee text', 'started_at', '1 day', %s, p_start => %s)",
               [Jsonb({"all": {"drop_after": "60 days", "anonymise_after": "10 days"}}), start])
    db.execute("SELECT pgretention.anon_rule_set('public.calls', 'caller', 'pseudonym');"
               "SELECT pgretention.anon_rule_set('public.calls', 'callee', 'e164_prefix', '4');"
               "SELECT pgretention.anon_rule_set('public.calls', 'id', 'keep')")


def _insert_calls(db: DB, first: datetime, n: int = 100, step: str = "1 minute") -> None:
    db.execute("INSERT INTO calls SELECT g, %s::timestamptz + g * %s::interval, '+3161234' || lpad(g::text, 4, '0'),"
               " '+31699999999' FROM generate_series(1, %s) g", [first, step, n])


def _epoch(d: datetime) -> str:
    return f"{d.year}q{(d.month - 1) // 3 + 1}"


def _stuck_ops(db: DB) -> int:
    return int(db.one(f"SELECT count(*) FROM {INTERNAL['anon_ops']} WHERE state <> 'done'"))  # noqa: S608


def _capture_triggers(db: DB) -> int:
    return int(db.one("SELECT count(*) FROM pg_trigger WHERE tgname = %s", [INTERNAL["capture_trigger"]]))


# -- finding 13a: a destroyed pseudonym key ----------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 13: issue 19")
def test_13a_destroyed_key_fails_the_run_and_is_reported(reporting: DB) -> None:
    """The pseudonym key of the partitions' quarter was destroyed: the rewrite fails, the run is not
    'ok', the report has an anonymisation violation, and late rows for those days can still be
    inserted (no half-done rewrite is left behind)."""
    db = reporting
    day = _day()
    _calls(db, start=day - timedelta(days=20))
    _insert_calls(db, day - timedelta(days=15))
    heartbeat(db)
    assert_clean(db)
    for epoch in sorted({_epoch(day - timedelta(days=d)) for d in range(9, 22)}):
        db.execute("SELECT pgretention.anon_key_rotate(%s)", [epoch])
        db.execute("SELECT pgretention.anon_key_destroy(%s)", [epoch])
    res = run(db)
    assert res["status"] != "ok", res
    assert violations(db, "public.calls", pattern=r"anonymi|pseudonym|key"), findings(db)
    assert check_exit(db) == 1
    db.execute("INSERT INTO calls VALUES (5000, %s, '+31600000000', '+31600000001')", [day - timedelta(days=15, hours=-2)])
    assert _capture_triggers(db) == 0


# -- finding 13b: ALTER TABLE ADD COLUMN during a rewrite ------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 13: issue 19")
def test_13b_column_added_during_a_rewrite_fails_loudly_and_the_next_run_recovers(reporting: DB) -> None:
    """The application adds a column while a partition's rewrite waits to be swapped in. The swap
    fails: the run says so, the report has a violation; the next run finishes or undoes the rewrite,
    so that rows for that day can be inserted again and no capture trigger is left."""
    db = reporting
    day = _day()
    _calls(db, start=day - timedelta(days=20))
    _insert_calls(db, day - timedelta(days=15))
    heartbeat(db)
    db.execute("SELECT pgretention.setting_set(%s, '60s')", [INTERNAL["lock_timeout"]])
    reader = db.connect()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls")  # a long report
        runner = Session(db, "CALL pgretention.run(p_runner => 'test')").start()
        wait_until(lambda: waits_on_lock(db, runner.pid, "public.calls"), "the swap to wait for its lock")
        # the same session, holding the table already, goes ahead of the waiting swap
        reader.execute("ALTER TABLE calls ADD COLUMN cell_id text")
        reader.execute("COMMIT")
    finally:
        reader.close()
    runner.result()
    status = db.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1")
    assert status != "ok"
    assert violations(db, "public.calls", pattern=r"anonymi|rewrite"), findings(db)
    run(db)
    db.execute("INSERT INTO calls VALUES (5000, %s, '+31600000000', '+31600000001', 'cell-1')",
               [day - timedelta(days=20, hours=-2)])
    assert (_stuck_ops(db), _capture_triggers(db)) == (0, 0)


# -- finding 14: rows in default partitions -----------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 14: issue 19")
def test_14_rows_in_the_default_partition_are_anonymised(reporting: DB) -> None:
    """A backfill of 50 days lands in the default partition (the table starts today): after a run, no
    row older than anonymise_after (10 days) holds a caller in clear."""
    db = reporting
    _calls(db)
    _insert_calls(db, datetime.now(UTC) - timedelta(days=50), n=480, step="2 hours")
    assert db.one("SELECT count(*) FROM calls_default") > 400
    run(db)
    left = db.one("SELECT count(*) FROM calls WHERE caller LIKE %s AND started_at < now() - interval '11 days'", [CLEAR])
    assert left == 0


@pytest.mark.xfail(strict=True, reason="finding 14: issue 19")
def test_14_rows_past_anonymise_after_still_identifying_are_a_violation(reporting: DB) -> None:
    """The report counts rows past anonymise_after that still hold identifying values."""
    db = reporting
    _calls(db)
    heartbeat(db)
    assert_clean(db)
    _insert_calls(db, datetime.now(UTC) - timedelta(days=50), n=450, step="2 hours")
    assert violations(db, "public.calls", pattern=r"anonymi"), findings(db)
    assert check_exit(db) == 1


# -- finding 15: class set without --anonymise-after ----------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 15: issue 19")
def test_15_class_set_drop_after_keeps_anonymise_after(reporting: DB) -> None:
    """``pgretention class set public.calls all --drop-after '180 days'`` changes drop_after only."""
    db = reporting
    _calls(db)
    res = db.cli("class", "set", "public.calls", "all", "--drop-after", "180 days")
    assert res.returncode == 0, res.stderr
    row = db.all("SELECT drop_after, anonymise_after FROM pgretention.status() WHERE table_name = 'public.calls'")
    assert row == [(timedelta(days=180), timedelta(days=10))]
