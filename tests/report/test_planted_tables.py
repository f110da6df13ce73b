"""Planted violations of managed tables (issue 19): odd timestamps, members moved between classes,
future-dated rows, late rows of the time-first layout, unbounded partitions, a changed partition
interval; and the catalog and plan inconsistencies of finding 24, and seed rule 1."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgretention import installer
from tests.fix_db import DB, run
from tests.report.conftest import (
    assert_clean,
    check_exit,
    findings,
    heartbeat,
    metric_sum,
    metrics,
    report_json,
    violations,
)

UTC = timezone.utc
EV = "id bigint, t timestamptz, who text"


def _ev(db: DB, *, start_days: int = 40, interval: str = "1 day", drop_after: str = "30 days", **kw: object) -> None:
    """public.ev: one class of ``drop_after``, partitions from ``start_days`` ago, a recent row."""
    db.execute("SELECT pgretention.table_create('public.ev', %s, 't', %s, %s,"
               " p_start => date_trunc('day', now()) - make_interval(days => %s)"
               + "".join(f", {k} => %s" for k in kw) + ")",
               [EV, interval, Jsonb({"all": {"drop_after": drop_after}}), start_days, *kw.values()])
    db.execute("INSERT INTO ev VALUES (1, now() - interval '1 hour', 'recent')")


# -- finding 11: +-infinity timestamps -------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 11: issue 19")
def test_11_minus_infinity_row_does_not_hide_a_300_day_old_row(reporting: DB) -> None:
    """A ``-infinity`` row next to a 300-day-old row in a 30-day class: the report shows violations
    (never a failed check downgraded to a warning), status and metrics keep working."""
    db = reporting
    _ev(db)
    run(db)
    assert_clean(db)
    db.execute("INSERT INTO ev VALUES (20, '-infinity', 'sentinel'), (21, now() - interval '300 days', 'old')")
    failed = [f for f in findings(db) if f["check_name"] == "check_failed"]
    assert failed == [] or all(f["severity"] == "violation" for f in failed), failed
    assert violations(db, "public.ev", pattern=r"\d+ (expired )?rows"), findings(db)
    assert db.cli("status").returncode == 0
    assert check_exit(db) == 1
    assert metric_sum(metrics(db), "pgretention_findings", section="tables", severity="violation") >= 1


@pytest.mark.xfail(strict=True, reason="finding 11: issue 19")
def test_11_plus_infinity_row_is_reported_and_the_report_still_renders(reporting: DB) -> None:
    """A ``+infinity`` row (kept for ever) does not break ``pgretention report``; the report names it."""
    db = reporting
    _ev(db)
    run(db)
    db.execute("INSERT INTO ev VALUES (22, 'infinity', 'sentinel')")
    data = report_json(db)
    assert data["summary"]["violations"] > 0, data["findings"]
    assert violations(db, "public.ev", pattern=r"infinit|future|never"), findings(db)


# -- finding 12: a member moved with a non-canonical value -------------------------------------------
def _tenants(db: DB) -> None:
    """Tenant 7 (int class column) with rows 50 days old in class long (a year); class short: 30 days."""
    db.execute("SELECT pgretention.table_create('public.ev', 'id bigint, tenant int, t timestamptz, who text', 't',"
               " '1 day', %s, p_class_column => 'tenant', p_default_class => 'long',"
               " p_start => date_trunc('day', now()) - interval '60 days')",
               [Jsonb({"short": {"drop_after": "30 days"}, "long": {"drop_after": "365 days"}})])
    db.execute("INSERT INTO ev SELECT g, 7, now() - interval '50 days' + g * interval '1 minute', 'x'"
               " FROM generate_series(1, 10) g")


@pytest.mark.xfail(strict=True, reason="finding 12: issue 19")
def test_12_member_moved_to_a_shorter_class_as_07_is_reported(reporting: DB) -> None:
    """Tenant 7 moved to class short as '07': its 50-day-old rows break the 30-day promise, and the
    report says so (``report --check`` exits 1)."""
    db = reporting
    _tenants(db)
    run(db)
    assert_clean(db)
    assert check_exit(db) == 0
    db.execute("SELECT pgretention.member_assign('public.ev', '07', 'short')")
    assert violations(db, "public.ev"), findings(db)
    assert check_exit(db) == 1


@pytest.mark.xfail(strict=True, reason="finding 12: issue 19")
def test_12_member_moved_to_a_shorter_class_as_07_is_purged(reporting: DB) -> None:
    """The engine applies the shorter period to tenant 7 however the value was typed."""
    db = reporting
    _tenants(db)
    db.execute("SELECT pgretention.member_assign('public.ev', '07', 'short')")
    run(db)
    assert db.one("SELECT count(*) FROM ev WHERE tenant = 7") == 0


# -- finding 18: a future-dated row and premake -------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 18: issue 19")
def test_18_future_dated_row_does_not_block_premake_and_is_reported(reporting: DB) -> None:
    """A row dated a week ahead sits in the default partition. Runs four days later still premake the
    days around it (the run does not fail; new rows land in partitions) and the report names it."""
    db = reporting
    _ev(db, start_days=5, p_premake=4)
    db.execute("INSERT INTO ev VALUES (2, now() + interval '7 days', 'device-42')")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    later = datetime.now(UTC) + timedelta(days=4)
    res = run(db, later)
    assert res["status"] != "failed", res["message"]
    for d in (4, 5, 6, 8):
        leaf = db.one("INSERT INTO ev VALUES (100, %s, 'probe') RETURNING tableoid::regclass::text",
                      [day + timedelta(days=d, hours=1)])
        db.execute("DELETE FROM ev WHERE id = 100")
        assert leaf != "ev_default", f"no partition for day +{d}"
    assert violations(db, "public.ev", later, pattern=r"future|ahead"), findings(db, later)


# -- finding 19: time-first layout, a late row after the class purge -------------------------------
@pytest.mark.xfail(strict=True, reason="finding 19: issue 19")
def test_19_late_row_after_a_class_purge_is_seen_and_removed(reporting: DB) -> None:
    """Time-first layout, eu 30 days, intl 90 days. After eu's rows of old partitions were purged, an NL
    row 50 days old arrives: status shows it as eu's oldest row, and the next run removes it (not at
    intl's 90 days)."""
    db = reporting
    db.execute("SELECT pgretention.table_create('public.tl', 'id bigint, region text, t timestamptz, who text', 't',"
               " '1 day', %s, p_class_column => 'region', p_default_class => 'intl', p_layout => 'time',"
               " p_start => date_trunc('day', now()) - interval '60 days')",
               [Jsonb({"eu": {"drop_after": "30 days", "members": ["NL"]}, "intl": {"drop_after": "90 days"}})])
    db.execute("INSERT INTO tl SELECT g, CASE WHEN g % 2 = 0 THEN 'NL' ELSE 'US' END,"
               " now() - interval '59 days' + g * interval '1 hour', 'x' FROM generate_series(1, 1400) g")
    run(db)
    assert_clean(db)
    db.execute("INSERT INTO tl VALUES (9999, 'NL', now() - interval '50 days', 'late')")
    age = db.one("SELECT oldest_row_age FROM pgretention.status() WHERE table_name = 'public.tl' AND class_name = 'eu'")
    assert age is not None and age >= timedelta(days=50), age
    run(db)
    assert db.one("SELECT count(*) FROM tl WHERE id = 9999") == 0


# -- finding 22: a MINVALUE partition -----------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 22: issue 19")
def test_22_minvalue_partition_is_refused_or_expired(reporting: DB) -> None:
    """``manage_table`` on a table with a ``FROM (MINVALUE)`` partition refuses it, or the engine
    expires its rows: they are never kept for ever."""
    db = reporting
    bound = db.one("SELECT date_trunc('day', now()) - interval '35 days'")
    db.execute("CREATE TABLE mv (id bigint, t timestamptz NOT NULL, who text) PARTITION BY RANGE (t)")
    db.execute(f"CREATE TABLE mv_old PARTITION OF mv FOR VALUES FROM (MINVALUE) TO ('{bound.isoformat()}')")  # noqa: S608
    db.execute("INSERT INTO mv VALUES (1, now() - interval '100 days', 'x'), (2, now() - interval '36 days', 'y')")
    try:
        db.execute("SELECT pgretention.table_manage('public.mv', 't', '1 day', %s, p_start => %s)",
                   [Jsonb({"all": {"drop_after": "30 days"}}), bound])
    except psycopg.Error:
        return  # refused
    assert violations(db, "public.mv"), findings(db)
    run(db)
    assert db.one("SELECT count(*) FROM mv") == 0


# -- finding 23: the partition interval changed -------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 23: issue 19")
def test_23_monthly_to_daily_interval_raises_no_false_violation(reporting: DB) -> None:
    """A row 70 days old in an untouched monthly partition (60-day class: it may live 60 days + one
    month) is no violation after the table moves to daily partitions."""
    db = reporting
    _ev(db, start_days=100, interval="1 month", drop_after="60 days")
    heartbeat(db)
    db.execute("INSERT INTO ev VALUES (3, now() - interval '70 days', 'old month')")
    assert db.one("SELECT tableoid::regclass::text FROM ev WHERE id = 3") != "ev_default"
    assert_clean(db)
    db.execute("SELECT pgretention.table_set_interval('public.ev', '1 day')")
    assert_clean(db)


@pytest.mark.xfail(strict=True, reason="finding 23: issue 19")
def test_23_daily_to_monthly_interval_keeps_the_daily_promise(reporting: DB) -> None:
    """A row 63 days old in a daily partition (60-day class: it may live 60 days + 1 day + the run gap)
    stays a violation after the table moves to monthly partitions."""
    db = reporting
    _ev(db, start_days=70, drop_after="60 days")
    heartbeat(db)
    db.execute("INSERT INTO ev VALUES (3, now() - interval '63 days', 'old day')")
    assert db.one("SELECT tableoid::regclass::text FROM ev WHERE id = 3") != "ev_default"
    assert violations(db, "public.ev"), findings(db)
    db.execute("SELECT pgretention.table_set_interval('public.ev', '1 month')")
    assert violations(db, "public.ev"), findings(db)


# -- finding 24: catalog and plan ----------------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="finding 24: issue 19")
def test_24a_one_catalog_row_per_member(reporting: DB) -> None:
    """'07' and '7' are the same tenant of an int column: the catalog holds one member for it."""
    db = reporting
    _tenants(db)
    db.execute("SELECT pgretention.member_assign('public.ev', '07', 'short')")
    try:
        db.execute("SELECT pgretention.member_assign('public.ev', '7', 'short')")
    except psycopg.Error:
        pass
    members = db.all("SELECT value, class_name FROM pgretention.class_member")
    assert len(members) == 1, members


@pytest.mark.xfail(strict=True, reason="finding 24: issue 19")
def test_24b_plan_lists_the_purge_of_a_moved_member(reporting: DB) -> None:
    """``plan()`` shows the deletion of a moved member's rows that the next run carries out."""
    db = reporting
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, region text, started_at timestamptz',"
               " 'started_at', '1 day', %s, p_class_column => 'region', p_default_class => 'intl',"
               " p_start => now() - interval '10 months')",
               [Jsonb({"eu": {"drop_after": "6 months", "members": ["NL"]}, "intl": {"drop_after": "24 months"}})])
    db.execute("INSERT INTO cdr SELECT g, 'BE', now() - interval '9 months' + g * interval '1 hour'"
               " FROM generate_series(1, 20) g")
    db.execute("SELECT pgretention.member_assign('public.cdr', 'BE', 'eu')")
    plan = db.all("SELECT class_name, partition, action, rows_estimate FROM pgretention.plan()"
                  " WHERE table_name = 'public.cdr' AND action NOT LIKE 'detach%%'")
    assert plan, "plan lists no row-level deletion"
    run(db)
    assert db.one("SELECT count(*) FROM cdr WHERE region = 'BE'") == 0


@pytest.mark.xfail(strict=True, reason="finding 24: issue 19")
def test_24c_release_then_manage_again(reporting: DB) -> None:
    """A released table can be managed again without dropping its default partition by hand."""
    db = reporting
    _ev(db)
    db.execute("INSERT INTO ev VALUES (2, now() + interval '100 days', 'in the default partition')")
    db.execute("SELECT pgretention.table_release('public.ev')")
    db.execute("SELECT pgretention.table_manage('public.ev', 't', '1 day', %s,"
               " p_start => date_trunc('day', now()) + interval '5 days')", [Jsonb({"all": {"drop_after": "30 days"}})])
    assert db.one("SELECT count(*) FROM ev") == 2


@pytest.mark.xfail(strict=True, reason="finding 24: issue 19")
def test_24d_cycle_in_an_entity_hierarchy_is_a_violation(reporting: DB) -> None:
    """Two accounts made each other's parent after the rule was created: inactive for years, they are
    'due' at every run and never deleted. The report calls that a violation and names the cycle."""
    db = reporting
    installer.install(db.dsn, reference_schema=True)
    db.execute("INSERT INTO crm.account (id, name, email, created_at, last_login_at) VALUES"
               " (40, 'a', 'a@example.org', now() - interval '4 years', now() - interval '3 years'),"
               " (41, 'b', 'b@example.org', now() - interval '4 years', now() - interval '3 years')")
    db.execute("UPDATE crm.account SET parent_id = 41 WHERE id = 40; UPDATE crm.account SET parent_id = 40 WHERE id = 41")
    later = datetime.now(UTC) + timedelta(days=31)
    for at in (datetime.now(UTC), later):
        with db.connect() as conn:
            conn.execute("CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [at])
    assert db.one("SELECT count(*) FROM crm.account") == 2
    assert violations(db, "crm.account", later, pattern=r"cycle"), findings(db, later)


# -- seed rule 1: rows kept longer by contract ----------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="rule 1: issue 19")
def test_rule_01_rows_kept_longer_by_contract_are_no_violation(reporting: DB) -> None:
    """Rule 1: messages are kept 13 months; a customer's contract keeps them 24. Tenant acme moves to
    the contract class; three months later its 15-month-old rows are rightly kept, and the report does
    not call them a violation of the 13-month class."""
    db = reporting
    db.execute("SELECT pgretention.table_create('public.msg', 'id bigint, tenant text, t timestamptz, body text',"
               " 't', '1 month', %s, p_class_column => 'tenant', p_default_class => 'sms',"
               " p_start => now() - interval '13 months')",
               [Jsonb({"sms": {"drop_after": "13 months", "members": ["acme", "globex"]},
                       "contract": {"drop_after": "24 months"}})])
    db.execute("INSERT INTO msg SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END,"
               " now() - interval '12 months' + g * interval '1 hour', 'x' FROM generate_series(1, 20) g")
    db.execute("SELECT pgretention.member_assign('public.msg', 'acme', 'contract')")
    later = datetime.now(UTC) + timedelta(days=92)
    run(db, later)
    assert db.all("SELECT tenant, count(*) FROM msg GROUP BY tenant") == [("acme", 10)]
    assert violations(db, "public.msg", later) == [], findings(db, later)
    data = report_json(db, later)
    assert data["summary"]["violations"] == 0, data["findings"]
