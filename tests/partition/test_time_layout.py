"""The time-first layout (classes share time partitions): the layout of Citus distributed tables,
tested here on one server. The 800-day simulation runs in both layouts in test_partition_engine.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB, run

UTC = timezone.utc
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CLASSES = {"eu": {"drop_after": "10 days", "anonymise_after": "3 days", "members": ["NL", "DE"]},
           "intl": {"drop_after": "30 days", "anonymise_after": "20 days"}}


@pytest.fixture
def shared(engine: DB) -> DB:
    """cdr with eu (10 days) and intl (30 days) in shared daily partitions; 40 days x 96 rows."""
    db = engine
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, region text, started_at timestamptz,"
               " caller text', 'started_at', '1 day', %s, p_class_column => 'region', p_default_class => 'intl',"
               " p_layout => 'time', p_start => %s)", [Jsonb(CLASSES), NOW - timedelta(days=41)])
    db.execute("INSERT INTO cdr SELECT g, (ARRAY['NL', 'DE', 'US', 'BR'])[g %% 4 + 1],"
               " %s - interval '40 days' + g * interval '15 minutes', '+3161' || lpad((g %% 50)::text, 7, '0')"
               " FROM generate_series(0, 40 * 96 - 1) g", [NOW.replace(hour=0)])
    return db


def count(db: DB, where: str, params: Any = None) -> int:
    return int(db.one(f"SELECT count(*) FROM cdr WHERE {where}", params))  # noqa: S608 - test conditions


def test_layout_is_one_level_and_shorter_class_purged_by_rows(shared: DB) -> None:
    assert shared.one("SELECT pg_get_partkeydef('cdr'::regclass)") == "RANGE (started_at)"
    assert shared.one("SELECT count(*) FROM pg_partitioned_table p JOIN pg_inherits i ON i.inhrelid = p.partrelid") == 0
    plan = dict(shared.all("SELECT action, count(*) FROM pgretention.plan(%s) GROUP BY 1", [NOW]))
    assert plan == {"detach and drop": 11, "delete the class's rows": 20}
    res = run(shared, NOW)
    assert res["status"] == "ok", res
    eu_cut, intl_cut = NOW.replace(hour=0) - timedelta(days=10), NOW.replace(hour=0) - timedelta(days=30)
    assert count(shared, "region IN ('NL', 'DE') AND started_at < %s", [eu_cut]) == 0
    assert count(shared, "region IN ('NL', 'DE') AND started_at >= %s", [eu_cut]) == 10 * 48
    assert count(shared, "region NOT IN ('NL', 'DE') AND started_at < %s", [intl_cut]) == 0
    assert count(shared, "region NOT IN ('NL', 'DE') AND started_at >= %s", [intl_cut]) == 30 * 48
    # partitions go with the longest class; the eu rows of 20 shared partitions went row by row
    assert shared.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'") == 11
    assert shared.one("SELECT count(*) FROM pgretention.class_purge WHERE class_name = 'eu' AND done") == 20
    assert shared.one("SELECT sum((details ->> 'rows')::int) FROM pgretention.audit_log"
                      " WHERE action = 'class.purge'") == 20 * 48
    # a second run has nothing left to do
    again = run(shared, NOW)
    assert again["totals"] == {"partitions_dropped": 0, "partitions_deferred": 0, "rows_deleted": 0}
    report = shared.all("SELECT class_name, rows_past_overshoot FROM pgretention.report_tables(%s)", [NOW])
    assert report == [("eu", 0), ("intl", 0)]
    ages = dict(shared.all("SELECT class_name, oldest_row FROM pgretention.status(%s)", [NOW]))
    assert ages["eu"] >= eu_cut and ages["intl"] >= intl_cut
    hist = dict(shared.all("SELECT class_name, sum(rows) FROM pgretention.report_age_histogram(%s)"
                           " GROUP BY 1", [NOW]))
    assert hist == {"eu": 10 * 48, "intl": 30 * 48}
    assert shared.one("SELECT ok FROM pgretention.audit_verify()") is True


def test_holds_keep_rows_of_their_class_and_subject(shared: DB) -> None:
    shared.execute("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\"}')")
    shared.execute("SELECT pgretention.hold_set('order', 'R-1', 'phone', '+31610000007')")
    # a class hold on eu for days 15..13 before NOW
    shared.execute("SELECT pgretention.hold_set('order', 'R-2', p_table => 'public.cdr', p_class => 'eu',"
                   " p_from => %s, p_to => %s)", [NOW.replace(hour=0) - timedelta(days=15),
                                                  NOW.replace(hour=0) - timedelta(days=13)])
    held_subject = count(shared, "caller = '+31610000007' AND region IN ('NL', 'DE') AND started_at < %s",
                         [NOW.replace(hour=0) - timedelta(days=10)])
    assert run(shared, NOW)["status"] == "ok"
    eu_old = "region IN ('NL', 'DE') AND started_at < %s"
    left = shared.all(f"SELECT started_at >= %s AND started_at < %s, caller = '+31610000007', count(*)"  # noqa: S608
                      f" FROM cdr WHERE {eu_old} GROUP BY 1, 2",
                      [NOW.replace(hour=0) - timedelta(days=15), NOW.replace(hour=0) - timedelta(days=13),
                       NOW.replace(hour=0) - timedelta(days=10)])
    by = {(bool(a), bool(b)): n for a, b, n in left}
    assert by.get((True, False), 0) + by.get((True, True), 0) == 2 * 48  # the class hold's two days
    in_store = shared.one("SELECT count(*) FROM pgretention.hold_store WHERE row_data ->> 'caller' = '+31610000007'"
                          " AND row_data ->> 'region' IN ('NL', 'DE')")
    assert by.get((False, True), 0) + by.get((True, True), 0) + in_store == held_subject
    # partitions still holding held eu rows are looked at again at every run
    assert shared.one("SELECT count(*) FROM pgretention.class_purge WHERE class_name = 'eu' AND NOT done") > 0
    shared.execute("SELECT pgretention.hold_release(id) FROM pgretention.legal_hold")
    assert run(shared, NOW)["status"] == "ok"
    assert count(shared, eu_old, [NOW.replace(hour=0) - timedelta(days=10)]) == 0
    assert shared.one("SELECT ok FROM pgretention.audit_verify()") is True


def test_member_moved_to_the_shorter_class_follows_it(shared: DB) -> None:
    assert run(shared, NOW)["status"] == "ok"
    assert count(shared, "region = 'US' AND started_at < %s", [NOW.replace(hour=0) - timedelta(days=10)]) > 0
    assert shared.one("SELECT pgretention.member_assign('public.cdr', 'US', 'eu')") == "assigned to class eu"
    assert run(shared, NOW)["status"] == "ok"
    assert count(shared, "region = 'US' AND started_at < %s", [NOW.replace(hour=0) - timedelta(days=10)]) == 0
    assert count(shared, "region = 'BR' AND started_at >= %s", [NOW.replace(hour=0) - timedelta(days=30)]) == 30 * 24


def test_each_class_anonymised_at_its_own_age(shared: DB) -> None:
    for col, method in [("id", "keep"), ("caller", "pseudonym")]:
        shared.execute("SELECT pgretention.anon_rule_set('public.cdr', %s, %s)", [col, method])
    total = count(shared, "true")
    with shared.connect() as conn:
        conn.execute("CALL pgretention.anon_run(%s)", [NOW])
    day = NOW.replace(hour=0)
    # eu after 3 days, intl after 20; never the other class's rows
    # (rows past their class's drop_after are not rewritten: the next run deletes them)
    assert count(shared, "region IN ('NL', 'DE') AND started_at >= %s AND started_at < %s AND caller LIKE '+%%'",
                 [day - timedelta(days=10), day - timedelta(days=3)]) == 0
    assert count(shared, "region IN ('NL', 'DE') AND started_at >= %s AND caller NOT LIKE '+%%'", [day - timedelta(days=2)]) == 0
    assert count(shared, "region NOT IN ('NL', 'DE') AND started_at >= %s AND started_at < %s AND caller LIKE '+%%'",
                 [day - timedelta(days=30), day - timedelta(days=20)]) == 0
    assert count(shared, "region NOT IN ('NL', 'DE') AND started_at >= %s AND started_at < %s AND caller NOT LIKE '+%%'",
                 [day - timedelta(days=19), day - timedelta(days=3)]) == 0
    assert count(shared, "true") == total
    ops = dict(shared.all("SELECT class_name, count(*) FROM pgretention.anon_op WHERE state = 'done' GROUP BY 1"))
    assert ops["eu"] == 7 and ops["intl"] == 10
    assert shared.one("SELECT count(*) FROM pg_class WHERE relname ~ '_pgr_(anon|orig)$'") == 0


@pytest.mark.parametrize("call, message", [
    ("SELECT pgretention.table_create('public.t2', 'id int, r text, ts timestamptz', 'ts', '1 day',"
     " '{\"a\": {\"drop_after\": \"1 day\"}}', p_class_column => 'r', p_layout => 'diagonal')",
     "layout of table public.t2 must be class or time"),
    ("SELECT pgretention.table_create('public.t2', 'id int, r text, ts timestamptz', 'ts', '1 day',"
     " '{\"a\": {\"drop_after\": \"1 day\"}}', p_distribute_by => 'id')",
     "the citus extension is not installed"),
    ("SELECT pgretention.table_create('public.t2', 'id int, r text, ts timestamptz', 'ts', '1 day',"
     " '{\"a\": {\"drop_after\": \"1 day\"}}', p_distribute_by => 'id; DROP TABLE cdr')",
     "distribution column"),
])
def test_bad_layout_input_changes_nothing(shared: DB, call: str, message: str) -> None:
    with shared.connect() as conn:
        before = snapshot(conn)
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(call)
        assert diff(before, snapshot(conn)) == {}
