"""Partition engine: classes, purge, default partitions, time zones, runners, bad input."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from tests.fix_catalog import diff, snapshot
from tests.fix_cdr import create_cdr, leaf_at, simulate_800_days
from tests.fix_db import DB, run, simulate

UTC = timezone.utc


@pytest.mark.parametrize("layout", ["class", "time"])
def test_simulated_800_days_three_classes(engine: DB, layout: str) -> None:
    """Daily ingest and daily runs over 800 days: nothing kept past drop_after + one interval, nothing lost early."""
    simulate_800_days(engine, layout)


def test_session_time_zone_does_not_move_boundaries(engine: DB) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    create_cdr(engine, {"all": {"drop_after": "10 days"}}, class_column=None, start=start)
    at = datetime(2025, 3, 20, 12, tzinfo=UTC)
    plans = []
    for zone in ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"):
        with engine.connect() as conn:
            conn.execute(f"SET TimeZone = '{zone}'")
            plans.append(conn.execute("SELECT partition, range_to FROM pgretention.plan(%s)", [at]).fetchall())
    assert all(p == plans[0] for p in plans)
    assert [p[0] for p in plans[0]] == [leaf_at(engine, "public.cdr", start + timedelta(days=d)) for d in range(9)]
    with engine.connect() as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        conn.execute("CALL pgretention.run(%s)", [at])
    assert engine.one("SELECT min(range_to) FROM pgretention.partition_op") == "2025-03-02 00:00:00+00"


def test_local_time_column_across_dst(engine: DB) -> None:
    """timestamp without time zone in Europe/Amsterdam: DST days are handled, nothing goes early."""
    start = datetime(2025, 3, 25, tzinfo=UTC)
    create_cdr(engine, {"all": {"drop_after": "2 days"}}, class_column=None, start=start,
               columns="id bigint, started_at timestamp NOT NULL", p_time_zone="Europe/Amsterdam")
    # one row every hour of local time from 27 to 31 March (DST starts 30 March, 02:00 -> 03:00)
    engine.execute("INSERT INTO cdr SELECT g, t FROM generate_series(timestamp '2025-03-27', timestamp '2025-03-31 23:00',"
                   " interval '1 hour') WITH ORDINALITY AS x(t, g)")
    total = engine.one("SELECT count(*) FROM cdr")
    for hours in range(0, 24 * 5, 7):
        at = datetime(2025, 3, 29, tzinfo=UTC) + timedelta(hours=hours)
        run(engine, at)
        cutoff_local = engine.one("SELECT (%s::timestamptz - interval '2 days') AT TIME ZONE 'Europe/Amsterdam'", [at])
        # every row younger than the cutoff is still there
        expected = engine.one("SELECT count(*) FROM generate_series(timestamp '2025-03-27', timestamp '2025-03-31 23:00',"
                              " interval '1 hour') t WHERE t >= %s", [cutoff_local])
        assert engine.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [cutoff_local]) == expected
        # and nothing older than cutoff + one day (the partition interval) remains
        assert engine.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamp - interval '1 day'",
                          [cutoff_local]) == 0
    assert engine.one("SELECT count(*) FROM cdr") < total
    # the partition covering the DST day spans 23 real hours and was dropped whole
    assert engine.one("SELECT count(*) FROM pgretention.partition_op WHERE range_from = '2025-03-30 00:00:00'") == 1


def test_default_partition_rows_are_purged_and_reported(engine: DB) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    create_cdr(engine, {"eu": {"drop_after": "30 days", "members": ["NL"]}, "intl": {"drop_after": "60 days"}},
               start=start, default="intl")
    engine.execute(
        "INSERT INTO cdr (id, region, started_at) VALUES"
        " (1, 'NL', '2025-06-01'), (2, 'NL', '2025-12-20'), (3, 'US', '2025-06-01'), (4, 'US', '2025-12-20'),"
        " (5, 'NL', NULL), (6, NULL, '2025-06-01'), (7, 'NL', '2031-01-01'), (8, 'US', '2026-01-05')"
    )
    assert engine.one("SELECT count(*) FROM cdr_eu_default") == 4
    assert engine.one("SELECT count(*) FROM cdr_intl_default") == 3
    at = datetime(2026, 1, 25, tzinfo=UTC)
    st = {r[0]: r for r in engine.all("SELECT class_name, default_rows, expired_default_rows, null_time_rows"
                                      " FROM pgretention.status(%s)", [at])}
    assert st["eu"][1:] == (4, 2, 1)     # 2025-06-01 and 2025-12-20 are past 30 days; one NULL
    assert st["intl"][1:] == (3, 2, 0)   # 2025-06-01 twice (US and NULL region) past 60 days
    result = run(engine, at)
    assert result["totals"]["rows_deleted"] == 4
    assert sorted(r[0] for r in engine.all("SELECT id FROM cdr")) == [4, 5, 7, 8]
    assert engine.one("SELECT sum((details->>'rows')::int) FROM pgretention.audit_log WHERE action = 'default.purge'") == 4


def test_runner_lock_and_standby_guard(engine: DB) -> None:
    create_cdr(engine, {"all": {"drop_after": "1 day"}}, class_column=None,
               start=datetime(2026, 1, 1, tzinfo=UTC))
    runs_before = engine.one("SELECT count(*) FROM pgretention.job_run")
    with engine.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('pgretention.run'))")
        notices: list[str] = []
        with engine.connect() as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            t0 = time.monotonic()
            conn.execute("CALL pgretention.run(%s)", [datetime(2026, 1, 10, tzinfo=UTC)])
            assert time.monotonic() - t0 < 2
        assert notices == ["pgretention: another run is active in this database; nothing to do"]
    assert engine.one("SELECT count(*) FROM pgretention.job_run") == runs_before
    assert engine.one("SELECT count(*) FROM pgretention.partition_op") == 0


def test_two_runners_started_together(engine: DB) -> None:
    create_cdr(engine, {"all": {"drop_after": "1 day"}}, class_column=None,
               start=datetime(2026, 1, 1, tzinfo=UTC))
    at = datetime(2026, 1, 20, tzinfo=UTC)
    outcomes: list[list[str]] = []

    def runner() -> None:
        msgs: list[str] = []
        with engine.connect() as conn:
            conn.add_notice_handler(lambda d: msgs.append(d.message_primary or ""))
            conn.execute("CALL pgretention.run(%s)", [at])
        outcomes.append(msgs)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worked = [m for m in outcomes if any("dropped partition" in x for x in m)]
    assert engine.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") == 18
    assert len(worked) >= 1
    assert engine.one("SELECT count(DISTINCT partition_name) FROM pgretention.partition_op") == 18


def test_long_report_bounds_insert_latency_and_defers(engine: DB) -> None:
    """A report holding the table open: inserts wait at most about lock_timeout, the drop waits its turn."""
    create_cdr(engine, {"all": {"drop_after": "2 days"}}, class_column=None, start=datetime.now(UTC) - timedelta(days=6))
    engine.execute("SELECT pgretention.setting_set('max_lock_wait_total', '3s')")
    engine.execute("INSERT INTO cdr (id, started_at) SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 100) g")
    latencies: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        with engine.connect() as conn:
            i = 1000
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("INSERT INTO cdr (id, started_at) VALUES (%s, now())", [i])
                latencies.append(time.monotonic() - t0)
                i += 1
                time.sleep(0.01)

    with engine.connect(autocommit=False) as report:
        report.execute("SELECT count(*) FROM cdr")  # holds ACCESS SHARE on every partition until commit
        w = threading.Thread(target=writer)
        w.start()
        try:
            res = run(engine, datetime.now(UTC))
        finally:
            time.sleep(0.3)
            stop.set()
            w.join()
        assert res["status"] == "partial"
        assert res["totals"]["partitions_deferred"] >= 1
        assert res["totals"]["partitions_dropped"] == 0
        report.rollback()
    assert max(latencies) < 0.5, max(latencies)
    res = run(engine, datetime.now(UTC))
    assert res["status"] == "ok" and res["totals"]["partitions_dropped"] >= 3
    assert engine.one("SELECT count(*) FROM cdr WHERE started_at < now() - interval '3 days'") == 0


def test_crash_after_detach_is_finished_by_next_run(engine: DB) -> None:
    create_cdr(engine, {"all": {"drop_after": "1 day"}}, class_column=None, start=datetime(2026, 1, 1, tzinfo=UTC))
    engine.execute("INSERT INTO cdr (id, started_at) VALUES (1, '2026-01-01 10:00'), (2, '2026-01-05 10:00')")
    leaf = engine.one("SELECT leaf FROM pgretention._expired_leaves(1, 'all', '2026-01-03') LIMIT 1")
    # a runner that died between detach and drop
    op = engine.one("SELECT pgretention._detach_leaf(1, 'all', %s::regclass, '2026-01-03', NULL, 1)", [leaf])
    assert engine.one("SELECT state FROM pgretention.partition_op WHERE id = %s", [op]) == "detached"
    assert engine.one("SELECT count(*) FROM cdr") == 1
    assert engine.one("SELECT count(*) FROM pgretention.plan('2026-01-03') WHERE action = 'finish pending drop'") == 1
    run(engine, datetime(2026, 1, 3, tzinfo=UTC))
    assert engine.one("SELECT state FROM pgretention.partition_op WHERE id = %s", [op]) == "done"
    assert engine.one("SELECT to_regclass(%s)", [str(leaf)]) is None
    assert engine.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'") == 1


def test_archive_instead_of_drop(engine: DB) -> None:
    engine.execute("CREATE SCHEMA cdr_archive")
    create_cdr(engine, {"all": {"drop_after": "1 day"}}, class_column=None, start=datetime(2026, 1, 1, tzinfo=UTC),
               p_on_expiry="archive", p_archive_schema="cdr_archive")
    engine.execute("INSERT INTO cdr (id, started_at) VALUES (1, '2026-01-01 10:00')")
    leaf = leaf_at(engine, "public.cdr", datetime(2026, 1, 1, 10, tzinfo=UTC)).split(".")[1]
    run(engine, datetime(2026, 1, 3, tzinfo=UTC))
    assert engine.one("SELECT count(*) FROM cdr") == 0
    assert engine.one(sql.SQL("SELECT count(*) FROM cdr_archive.{}").format(sql.Identifier(leaf))) == 1


def test_member_assignment_and_moves(engine: DB) -> None:
    """Rule 10: each customer chooses 6 to 24 months; a move to a shorter class applies to stored rows."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    create_cdr(engine, {"m6": {"drop_after": "6 months"}, "m24": {"drop_after": "24 months"},
                        "m12": {"drop_after": "12 months", "members": ["acme"]}},
               name="public.collected", columns="id bigint, tenant text, at timestamptz", time_column="at",
               class_column="tenant", default="m24", start=start, interval="1 month",
               p_min_drop_after="6 months", p_max_drop_after="24 months")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="outside the allowed window"):
        engine.execute("SELECT pgretention.class_add('public.collected', 'm36', '36 months')")
    # a new tenant with no rows is routed to its class partition at once
    assert engine.one("SELECT pgretention.member_assign('public.collected', 'newco', 'm6')") == "routed to class m6"
    engine.execute("INSERT INTO collected VALUES (1, 'newco', '2026-01-15'), (2, 'oldco', '2026-01-15'),"
                   " (3, 'oldco', '2026-06-15'), (4, 'acme', '2026-01-15')")
    assert engine.one("SELECT count(*) FROM collected_m6") == 1
    # oldco has rows in the default class (24 months): moving to 6 months keeps them in place
    res = engine.one("SELECT pgretention.member_assign('public.collected', 'oldco', 'm6')")
    assert res.startswith("reassigned")
    # acme moves from 12 to 24 months with rows stored: kept past 12 months
    engine.execute("SELECT pgretention.member_assign('public.collected', 'acme', 'm24')")
    run(engine, datetime(2026, 8, 10, tzinfo=UTC))
    ids = sorted(r[0] for r in engine.all("SELECT id FROM collected"))
    assert ids == [3, 4]  # newco's and oldco's January rows are past 6 months
    run(engine, datetime(2027, 2, 10, tzinfo=UTC))  # 13 months: acme (now 24 months) survives
    assert sorted(r[0] for r in engine.all("SELECT id FROM collected")) == [4]
    assert engine.one("SELECT count(*) FROM collected_m12_default") == 1  # moved out before its partition went
    run(engine, datetime(2028, 2, 10, tzinfo=UTC))
    assert engine.one("SELECT count(*) FROM collected") == 0
    assert engine.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'member.assign'") == 3


BAD_CALLS = [
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '-1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "must be positive"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', 'banana', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "invalid partition interval of table public.x 'banana'"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t text', 't', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "is not a time column"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 'nope', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "column nope does not exist in table public.x"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '1 day',"
     " '{\"a\": {\"drop_after\": \"1 month\", \"anonymise_after\": \"2 months\"}}')",
     "must be longer than anonymise_after"),
    ("SELECT pgretention.table_create('public.\"x;drop\"', 'id bigint, t timestamptz', 't', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "quotes, semicolons"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz); DROP TABLE y; --', 't', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "invalid column definition"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}',"
     " p_class_column => 'id'':')", "quotes, semicolons"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '1 day', '{\"a\": {\"drop_after\": \"soon\"}}')",
     "invalid drop_after of class a 'soon'"),
    ("SELECT pgretention.table_manage('public.nosuch', 't', '1 day', '{\"a\": {\"drop_after\": \"1 day\"}}')",
     "table public.nosuch does not exist"),
    ("SELECT pgretention.class_set('public.nosuch', 'a', '1 day')", "table public.nosuch is not managed by pgretention"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '1 day', '{\"A b\": {\"drop_after\": \"1 day\"}}')",
     "invalid class name"),
    ("SELECT pgretention.table_create('public.x', 'id bigint, t timestamptz', 't', '1 day',"
     " '{\"a\": {\"drop_after\": \"1 day\"}, \"b\": {\"drop_after\": \"2 days\"}}')", "several classes"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_input_is_refused_and_changes_nothing(engine: DB, call: str, message: str) -> None:
    with engine.connect() as conn:
        before = snapshot(conn)
        audit = conn.execute("SELECT count(*) FROM pgretention.audit_log").fetchone()
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(call)
        assert message in str(exc.value)
        assert diff(before, snapshot(conn)) == {}
        assert conn.execute("SELECT count(*) FROM pgretention.audit_log").fetchone() == audit
        assert conn.execute("SELECT count(*) FROM pgretention.managed_table").fetchone() == (0,)


def test_future_reference_time_refused_by_default(installed: DB) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is in the future"):
        installed.execute("CALL pgretention.run(now() + interval '1 day')")
    assert installed.one("SELECT count(*) FROM pgretention.job_run") == 0


def test_cli_plan_run_status(engine: DB) -> None:
    res = engine.cli("table", "create", "public.sms", "--columns", "id bigint, region text, sent_at timestamptz",
                     "--time-column", "sent_at", "--class", "eu:6 months", "--class", "intl:24 months",
                     "--class-column", "region", "--default-class", "intl", "--member", "NL=eu")
    assert res.returncode == 0, res.stderr
    engine.execute("INSERT INTO sms VALUES (1, 'NL', now() - interval '1 day'), (2, 'US', now())")
    res = engine.cli("--format", "json", "status")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert {r["class_name"] for r in data["tables"]} == {"eu", "intl"}
    assert data["schedule"]["pg_cron"] is True
    res = engine.cli("--format", "json", "plan", "--now", (datetime.now(UTC) + timedelta(days=200)).strftime("%Y-%m-%d"))
    assert res.returncode == 0, res.stderr
    assert any(r["class_name"] == "eu" and r["action"] == "detach and drop" for r in json.loads(res.stdout))
    res = engine.cli("--format", "json", "run")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run"]["status"] == "ok"
    assert engine.one("SELECT count(*) FROM sms") == 2
    res = engine.cli("table", "create", "public.bad", "--columns", "id bigint", "--time-column", "id",
                     "--class", "a:1 day")
    assert res.returncode == 6 and "is not a time column" in res.stderr and "Traceback" not in res.stderr


def test_standby_does_nothing_until_promoted(engine: DB) -> None:
    """On a streaming replica every scheduled entry point returns at once; after promotion it works."""
    cluster = engine.server.cluster
    if cluster is None:
        pytest.skip("needs the local throwaway cluster to make a replica with pg_basebackup")
    create_cdr(engine, {"all": {"drop_after": "1 day"}}, class_column=None, start=datetime.now(UTC) - timedelta(days=5))
    engine.execute("INSERT INTO cdr (id, started_at) SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 100) g")
    standby = cluster.make_standby()
    try:
        dsn = standby.conninfo(engine.name)
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if conn.execute("SELECT count(*) FROM cdr").fetchone()[0] == 100:  # type: ignore[index]
                        break
            except psycopg.OperationalError:
                pass
            assert time.monotonic() < deadline, "standby did not catch up"
            time.sleep(0.2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            notes: list[str] = []
            conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True  # type: ignore[index]
            conn.execute("CALL pgretention.run()")
            assert notes == ["pgretention: this server is a standby; nothing to do (run on the primary)"]
            assert conn.execute("SELECT count(*) FROM cdr").fetchone()[0] == 100  # type: ignore[index]
        standby.promote()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CALL pgretention.run()")
            assert conn.execute("SELECT count(*) FROM cdr WHERE started_at < now() - interval '2 days'").fetchone()[0] == 0  # type: ignore[index]
            assert conn.execute("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1").fetchone()[0] == "ok"  # type: ignore[index]
    finally:
        standby.stop(mode="immediate")


def test_pg_cron_job_runs_the_maintenance(db: DB) -> None:
    """The installed pg_cron job really runs `CALL pgretention.run()` in this database."""
    from pgretention import installer

    installer.install(db.dsn, cron_schedule="* * * * *")
    create_cdr(db, {"all": {"drop_after": "1 day"}}, class_column=None, start=datetime.now(UTC) - timedelta(days=4))
    deadline = time.monotonic() + 75
    while db.one("SELECT count(*) FROM pgretention.job_run WHERE runner = 'cron' AND status = 'ok'") == 0:
        assert time.monotonic() < deadline, "pg_cron did not run the job within 75 s"
        time.sleep(1)
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") >= 2
    with db.server.admin() as adm:
        row = adm.execute("SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
                          " WHERE j.jobname = %s ORDER BY d.start_time DESC LIMIT 1", [f"pgretention:{db.name}"]).fetchone()
    assert row is not None and row[0] == "succeeded"


def test_premake_continues_the_partition_grid(engine: DB) -> None:
    """Partitions made for a later reference time stay on the grid (midnight UTC) and cover it."""
    create_cdr(engine, {"all": {"drop_after": "30 days"}}, class_column=None, start=datetime.now(UTC) - timedelta(days=2),
               p_premake=3)
    ref = datetime.now(UTC) + timedelta(days=20, hours=7)
    run(engine, ref)
    bounds = engine.all("SELECT range_from, range_to FROM pgretention._leaves(1, 'all') WHERE NOT is_default ORDER BY lower_abs")
    assert all(f.endswith("00:00:00+00") and t.endswith("00:00:00+00") for f, t in bounds)
    assert all(bounds[i][1] <= bounds[i + 1][0] for i in range(len(bounds) - 1))  # no overlap
    covered = engine.one("SELECT count(*) FROM pgretention._leaves(1, 'all') WHERE lower_abs <= %s AND %s < upper_abs",
                         [ref + timedelta(days=3), ref + timedelta(days=3)])
    assert covered == 1


def test_clock_moving_backwards_deletes_nothing_early(installed: DB) -> None:
    """A run at a later reference time, then one at an earlier time: the second removes nothing more."""
    db = installed
    simulate(db)
    start = datetime.now(UTC) - timedelta(days=20)
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz', 'started_at',"
               " '1 day', '{\"all\": {\"drop_after\": \"10 days\"}}', p_start => %s)", [start])
    db.execute("INSERT INTO cdr SELECT g, %s + g * interval '1 hour' FROM generate_series(1, 480) g", [start])
    with db.connect() as conn:
        conn.execute("CALL pgretention.run(%s)", [start + timedelta(days=15)])
        after_first = db.one("SELECT count(*) FROM cdr")
        conn.execute("CALL pgretention.run(%s)", [start + timedelta(days=12)])  # the clock went back 3 days
    assert db.one("SELECT count(*) FROM cdr") == after_first
    assert db.one("SELECT min(started_at) FROM cdr") >= start + timedelta(days=4)
