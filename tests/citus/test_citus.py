"""pgretention on a Citus coordinator: distributed, time-partitioned tables.

Runs when PGRETENTION_CITUS_DSN points at a Citus coordinator with workers (see docs/citus.md for
a local cluster); skipped otherwise. Each test starts from a fresh pgretention install and drops
the tables it made. `make test-citus` runs this file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_cdr import simulate_800_days
from tests.fix_db import DB, run, simulate

UTC = timezone.utc
CITUS_DSN = os.environ.get("PGRETENTION_CITUS_DSN", "")
TABLES = ("public.cdr", "public.msg", "public.accounts")

pytestmark = [
    pytest.mark.citus,
    pytest.mark.skipif(not CITUS_DSN, reason="PGRETENTION_CITUS_DSN is not set: the citus suite needs a Citus"
                                             " coordinator with workers (docs/citus.md)"),
]


class CitusDB(DB):
    """The coordinator's database: the same helpers as the tests' throwaway databases."""

    def __init__(self, dsn: str) -> None:  # noqa: D107 - no server object: the DSN is given
        self.server = None  # type: ignore[assignment]
        self.name = "citus"
        self.dsn = dsn


@pytest.fixture
def citus() -> Iterator[CitusDB]:
    db = CitusDB(CITUS_DSN)
    if db.one("SELECT count(*) FROM pg_extension WHERE extname = 'citus'") != 1:
        pytest.fail("PGRETENTION_CITUS_DSN does not point at a database with the citus extension")
    if db.one("SELECT count(*) FROM citus_get_active_worker_nodes()") < 2:
        pytest.fail("the Citus cluster of PGRETENTION_CITUS_DSN needs at least two active workers")

    def clean() -> None:
        db.cli("uninstall", "--yes", "--keep-tables")
        for t in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {t} CASCADE")  # noqa: S608 - fixed names
        # partitions a failed test left detached, and other leftovers of the tests' tables
        for (name,) in db.all("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n"
                              " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                              " AND c.relname ~ '^(cdr|msg|accounts)_' AND NOT c.relispartition"):
            db.execute(f"DROP TABLE IF EXISTS {name} CASCADE")  # noqa: S608 - names from the catalog

    clean()
    # few shards per table: the simulations create hundreds of partitions
    db.execute("DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET citus.shard_count = 4', current_database()); END$$")
    db.cli("install", check=True)
    simulate(db)
    yield db
    clean()


def distributed_partitions(db: DB, table: str) -> list[tuple[str, int]]:
    """(partition, colocation id) of every partition of a table, with the table's own first."""
    return db.all("SELECT logicalrelid::text, colocationid FROM pg_dist_partition"
                  " WHERE logicalrelid = %s::regclass OR logicalrelid IN"
                  " (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)"
                  " ORDER BY logicalrelid = %s::regclass DESC, 1", [table, table, table])


def create_msg(db: DB, *, days: int, drop_after: str, anonymise_after: str | None = None,
               distribute_by: str = "sender", rows_per_day: int = 1000) -> int:
    """A distributed message log with one class, `days` days of rows; returns rows inserted."""
    cls: dict[str, Any] = {"drop_after": drop_after}
    if anonymise_after:
        cls["anonymise_after"] = anonymise_after
    db.execute("SELECT pgretention.table_create('public.msg', 'id bigint NOT NULL, sent_at timestamptz NOT NULL,"
               " sender text NOT NULL, recipient text, body text', 'sent_at', '1 day', %s,"
               " p_start => now() - make_interval(days => %s), p_distribute_by => %s)",
               [Jsonb({"all": cls}), days + 1, distribute_by])
    db.execute("INSERT INTO msg SELECT g, date_trunc('day', now()) - make_interval(days => %s)"
               " + (g %% %s) * make_interval(secs => 86400.0 / %s) + (g / %s) * interval '1 day',"
               " '+3161' || lpad((g %% 997)::text, 7, '0'), '+3162' || lpad((g %% 991)::text, 7, '0'), 'hello ' || g"
               " FROM generate_series(0, %s - 1) g",
               [days, rows_per_day, rows_per_day, rows_per_day, days * rows_per_day])
    return days * rows_per_day


def test_simulated_800_days_three_classes_distributed(citus: CitusDB) -> None:
    """The 800-day, three-class simulation of the partition engine on a distributed table."""
    simulate_800_days(citus, "time", p_distribute_by="id")
    parts = distributed_partitions(citus, "public.cdr")
    assert parts[0][0] == "cdr" and len(parts) > 100 and len({c for _, c in parts}) == 1


def test_class_layout_refused_and_nothing_changed(citus: CitusDB) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="Citus refuses"):
        citus.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, region text, started_at timestamptz',"
                      " 'started_at', '1 day', '{\"eu\": {\"drop_after\": \"6 months\", \"members\": [\"NL\"]},"
                      " \"intl\": {\"drop_after\": \"2 years\"}}', p_class_column => 'region', p_default_class => 'intl',"
                      " p_layout => 'class', p_distribute_by => 'id')")
    assert citus.one("SELECT to_regclass('public.cdr')") is None
    assert citus.one("SELECT count(*) FROM pgretention.managed_table") == 0
    citus.execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY, created_at timestamptz NOT NULL)")
    citus.execute("SELECT create_distributed_table('public.accounts', 'id')")
    res = citus.cli("adopt", "public.accounts", "--time-column", "created_at", "--drop-after", "1 year")
    assert res.returncode != 0 and "Citus table" in res.stderr, res.stderr
    assert citus.one("SELECT count(*) FROM pgretention.adoption") == 0


def test_purge_with_a_report_open_for_60_seconds(citus: CitusDB) -> None:
    """30 expired partitions; a report holds the table for 60 s: inserts through the coordinator wait
    at most about lock_timeout, the drops wait for the report and then all happen in the same run."""
    total = create_msg(citus, days=40, drop_after="10 days", rows_per_day=200)
    citus.execute("SELECT pgretention.setting_set('max_lock_wait_total', '120s')")
    latencies: list[float] = []
    inserted = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal inserted
        with citus.connect() as conn:
            i = 10_000_000
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("INSERT INTO msg VALUES (%s, now(), '+31699' || (%s %% 1000), NULL, 'x')", [i, i])
                latencies.append(time.monotonic() - t0)
                inserted += 1
                i += 1
                time.sleep(0.01)

    w = threading.Thread(target=writer)
    w.start()
    run_result: dict[str, Any] = {}
    try:
        with citus.connect(autocommit=False) as report:
            report.execute("SELECT count(*) FROM msg")  # ACCESS SHARE on every partition until commit
            runner = threading.Thread(target=lambda: run_result.update(run(citus, datetime.now(UTC))))
            runner.start()
            time.sleep(60)
            report.rollback()
        runner.join(timeout=300)
    finally:
        time.sleep(0.5)
        stop.set()
        w.join()
    assert run_result["status"] == "ok", run_result
    assert run_result["totals"]["partitions_dropped"] >= 30  # (and the empty one before the first day)
    kept_days = citus.one("SELECT count(DISTINCT date_trunc('day', sent_at)) FROM msg WHERE id < 10000000")
    assert kept_days == 10
    assert citus.one("SELECT count(*) FROM msg WHERE id < 10000000") == total - 30 * 200
    assert citus.one("SELECT count(*) FROM msg WHERE id >= 10000000") == inserted > 1000
    print(f"max insert latency through the coordinator: {max(latencies) * 1000:.1f} ms over {len(latencies)} inserts")
    assert max(latencies) <= 0.1, max(latencies)
    assert citus.one("SELECT ok FROM pgretention.audit_verify()") is True


def test_holds_preserved_on_drop_and_class_purge(citus: CitusDB) -> None:
    """A subject hold keeps its rows past the drop (hold store); a table hold keeps whole partitions."""
    total = create_msg(citus, days=20, drop_after="10 days", rows_per_day=300)
    citus.execute("SELECT pgretention.subject_table_register('public.msg', '{\"sender\": \"phone\"}')")
    held_sender = "+31610000007"
    held = citus.one("SELECT count(*) FROM msg WHERE sender = %s AND sent_at < date_trunc('day', now()) - interval '10 days'", [held_sender])
    assert held > 0
    citus.execute("SELECT pgretention.hold_set('order', 'R-1', 'phone', %s)", [held_sender])
    citus.execute("SELECT pgretention.hold_set('order', 'R-2', p_table => 'public.msg',"
                  " p_from => date_trunc('day', now()) - interval '19 days', p_to => date_trunc('day', now()) - interval '18 days')")
    res = run(citus, datetime.now(UTC))
    assert res["status"] == "ok", res["errors"]
    in_store = citus.one("SELECT count(*) FROM pgretention.hold_store WHERE row_data ->> 'sender' = %s", [held_sender])
    kept_held_day = citus.one("SELECT count(*) FROM msg WHERE sent_at >= date_trunc('day', now()) - interval '19 days'"
                              " AND sent_at < date_trunc('day', now()) - interval '18 days'")
    assert kept_held_day == 300
    live_held = citus.one("SELECT count(*) FROM msg WHERE sender = %s AND sent_at < date_trunc('day', now()) - interval '10 days'", [held_sender])
    assert in_store + live_held == held
    assert citus.one("SELECT count(*) FROM msg WHERE sent_at < date_trunc('day', now()) - interval '10 days'"
                     " AND NOT (sent_at >= date_trunc('day', now()) - interval '19 days'"
                     " AND sent_at < date_trunc('day', now()) - interval '18 days')") == 0
    assert citus.one("SELECT count(*) FROM msg") == total - 9 * 300
    assert citus.one("SELECT ok FROM pgretention.audit_verify()") is True


@pytest.mark.parametrize("column", ["sender", "recipient"])
def test_subject_export_and_erasure(citus: CitusDB, column: str) -> None:
    """By the distribution column (one shard) and by another column (every shard)."""
    total = create_msg(citus, days=5, drop_after="30 days", rows_per_day=1000)
    citus.execute("SELECT pgretention.subject_table_register('public.msg', %s)", [Jsonb({column: "phone"})])
    who = citus.one(f"SELECT {column} FROM msg WHERE id = 17")  # noqa: S608 - parametrized column name
    mine = citus.one(f"SELECT count(*) FROM msg WHERE {column} = %s", [who])  # noqa: S608
    assert mine > 1
    rid = citus.one("SELECT pgretention.request_create('access', %s)", [Jsonb({"phone": [who]})])
    export = citus.one("SELECT pgretention.request_export(%s)", [rid])
    assert len(export["tables"]["public.msg"]) == mine
    rid = citus.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [who]})])
    citus.execute("SELECT pgretention.request_fulfil(%s)", [rid])
    assert citus.one("SELECT status FROM pgretention.subject_request WHERE id = %s", [rid]) == "fulfilled"
    assert citus.one(f"SELECT count(*) FROM msg WHERE {column} = %s", [who]) == 0  # noqa: S608
    assert citus.one("SELECT count(*) FROM msg") == total - mine
    assert citus.one("SELECT ok FROM pgretention.audit_verify()") is True


def test_anonymise_swap_keeps_distribution_and_rows(citus: CitusDB) -> None:
    total = create_msg(citus, days=12, drop_after="60 days", anonymise_after="5 days", rows_per_day=500)
    for col, method, param in [("id", "keep", None), ("sender", "pseudonym", None),
                               ("recipient", "e164_prefix", "5"), ("body", "redact", None)]:
        citus.execute("SELECT pgretention.anon_rule_set('public.msg', %s, %s, %s)", [col, method, param])
    before = distributed_partitions(citus, "public.msg")
    res = run(citus, datetime.now(UTC))
    assert res["status"] == "ok"
    done = citus.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'")
    assert done >= 6
    assert citus.one("SELECT count(*) FROM msg") == total
    old = "sent_at < date_trunc('day', now()) - interval '6 days'"
    assert citus.one(f"SELECT count(*) FROM msg WHERE {old} AND (sender LIKE '+%%' OR body <> '[redacted]')") == 0  # noqa: S608
    assert citus.one(f"SELECT count(*) FROM msg WHERE {old}") > 0  # noqa: S608
    recent = "sent_at >= date_trunc('day', now()) - interval '4 days'"
    assert citus.one(f"SELECT count(*) FROM msg WHERE {recent} AND sender NOT LIKE '+%%'") == 0  # noqa: S608
    after = distributed_partitions(citus, "public.msg")
    assert [p for p, _ in after] == [p for p, _ in before]  # same partitions, every one distributed
    assert len({c for _, c in after}) == 1  # colocated with the table
    assert citus.one("SELECT count(*) FROM pg_class WHERE relname LIKE '%pgr_anon' OR relname LIKE '%pgr_orig'") == 0
    assert citus.one("SELECT ok FROM pgretention.audit_verify()") is True
    report = citus.all("SELECT class_name, rows_past_overshoot FROM pgretention.report_tables()")
    assert report == [("all", 0)]


def test_status_and_report_on_distributed_table(citus: CitusDB) -> None:
    create_msg(citus, days=15, drop_after="10 days", rows_per_day=100)
    before = citus.all("SELECT class_name, expired_partitions FROM pgretention.status()")
    assert before[0][1] >= 4
    run(citus, datetime.now(UTC))
    after = citus.one("SELECT expired_partitions FROM pgretention.status()")
    assert after == 0
    assert citus.one("SELECT sum(rows_past_overshoot) FROM pgretention.report_tables()") == 0
    hist = citus.one("SELECT sum(rows) FROM pgretention.report_age_histogram()")
    assert hist == citus.one("SELECT count(*) FROM msg")


def test_entity_rule_on_a_reference_table(citus: CitusDB) -> None:
    """Row rules delete by key: the same on a Citus reference table (copies on every node)."""
    citus.execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,"
                  " last_login_at timestamptz)")
    citus.execute("SELECT create_reference_table('public.accounts')")
    citus.execute("INSERT INTO accounts SELECT g, now() - interval '5 years', now() - make_interval(days => g, hours => 12)"
                  " FROM generate_series(1, 1500) g")
    citus.execute("SELECT pgretention.entity_rule_create('accounts', 'public.accounts', 'id',"
                  " '[{\"column\": \"created_at\"}, {\"column\": \"last_login_at\"}]', '24 months')")
    with citus.connect() as conn:
        conn.execute("CALL pgretention.entity_run(p_runner => 'test')")
        status, summary = conn.execute("SELECT status, summary FROM pgretention.job_run ORDER BY id DESC LIMIT 1").fetchone()  # type: ignore[misc]
    assert status == "ok", summary
    expected_left = citus.one("SELECT count(*) FROM generate_series(1, 1500) g"
                              " WHERE now() - make_interval(days => g, hours => 12) >= now() - interval '24 months'")
    assert citus.one("SELECT count(*) FROM accounts") == expected_left
    assert summary["totals"]["rows"] == 1500 - expected_left
    # every node's copy agrees
    counts = citus.all("SELECT result FROM run_command_on_workers('SELECT count(*) FROM public.accounts')")
    assert {int(r[0]) for r in counts} == {expected_left}
    assert citus.one("SELECT ok FROM pgretention.audit_verify()") is True
