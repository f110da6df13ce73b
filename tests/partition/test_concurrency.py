"""Concurrency: the purge under heavy COPY ingest, an erasure during a purge, the CLI and the pg_cron
statement running at once, and the anonymiser meeting an application transaction.

Already covered elsewhere and not repeated here: two SQL runners started together
(test_partition_engine.py::test_two_runners_started_together), adoption while the application
inserts (test_adopt.py, four tables), a long report holding the table during a purge
(test_partition_engine.py::test_long_report_bounds_insert_latency_and_defers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.fix_cdr import daily_cdr, expired_partitions
from tests.fix_db import DB, ROOT, last_run

UTC = timezone.utc
# -- a. purge while two writers COPY into the current partitions --------------------------------------
class CopyWriter:
    """COPY batches of rows into the current day's partitions, one short transaction each, until stopped."""

    def __init__(self, db: DB, n: int, at: datetime, batch: int = 400) -> None:
        self.db, self.n, self.at, self.batch = db, n, at, batch
        self.written = 0
        self.transactions = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        next_id = (self.n + 1) * 10_000_000
        with self.db.connect() as conn:
            while not self.stop.is_set():
                rows = [(next_id + i, self.at - timedelta(seconds=(next_id + i) % 80_000), f"+3164{next_id + i}",
                         f"+3165{i}", i % 600) for i in range(self.batch)]
                t0 = time.monotonic()
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        with cur.copy("COPY cdr (id, started_at, caller, callee, duration) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                    self.written += len(rows)
                    self.transactions += 1
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                self.latencies.append(time.monotonic() - t0)
                next_id += self.batch
                time.sleep(0.002)


def test_purge_during_heavy_copy_ingest(installed: DB) -> None:
    db = installed
    at = daily_cdr(db, days=60, rows_per_day=1000)
    total = db.one("SELECT count(*) FROM cdr")
    expired = expired_partitions(db, at)
    assert len(expired) >= 48
    writers = [CopyWriter(db, n, at) for n in range(2)]
    for w in writers:
        w.thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    with db.connect() as conn:
        conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [at])
    run_seconds = time.monotonic() - t0
    time.sleep(0.5)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.thread.join(30)
    status, summary = last_run(db)
    worst = max(max(w.latencies) for w in writers)
    written = sum(w.written for w in writers)
    attempts = db.one("SELECT sum(lock_attempts) FROM pgretention.partition_op")
    print(f"run {run_seconds:.2f} s; {sum(w.transactions for w in writers)} COPY transactions, {written} rows;"
          f" longest writer transaction {worst * 1000:.0f} ms; lock attempts {attempts}")
    # no writer saw an error; every row written is there; only the expired partitions went
    assert [e for w in writers for e in w.errors] == []
    assert all(w.transactions >= 10 for w in writers)
    assert status == "ok", summary
    assert summary["totals"]["partitions_dropped"] == len(expired)
    assert db.one("SELECT count(*) FROM cdr WHERE id >= 10000000") == written
    assert db.one("SELECT count(*) FROM cdr") == total - sum(expired.values()) + written
    leaves = {r[0] for r in db.all("SELECT relid::text FROM pg_partition_tree('public.cdr') WHERE isleaf")}
    assert leaves.isdisjoint(expired)
    assert db.one("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", [list(expired)]) == 0
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamptz - interval '11 days'", [at]) == 0
    # the writers waited at most a bounded time for the purge's brief parent locks
    assert worst < 2.0, worst
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


# -- b. an erasure request fulfilled while a run drops partitions -------------------------------------
SUBJECT, HELD_SUBJECT = "+31611111111", "+31612345678"
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def test_erasure_during_a_purge(installed: DB) -> None:
    db = installed
    at = daily_cdr(db, days=40, rows_per_day=2000)
    # the subject calls in every fifth record; another subject, under a disclosure order, once, long ago
    db.execute("UPDATE cdr SET caller = %s WHERE id %% 5 = 0", [SUBJECT])
    db.execute("UPDATE cdr SET callee = %s WHERE id = 17", [HELD_SUBJECT])
    db.execute("VACUUM ANALYZE cdr")
    db.execute("SELECT pgretention.register_subject_table('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    db.execute("SELECT pgretention.hold_set('disclosure order', 'ORDER-1', 'phone', %s)", [HELD_SUBJECT])
    hold_from = at - timedelta(hours=2)
    db.execute("SELECT pgretention.hold_set('regulator audit', 'REG-2', p_table => 'public.cdr', p_from => %s)", [hold_from])
    expired = expired_partitions(db, at)
    assert len(expired) >= 28
    bound = db.one("SELECT max(range_to)::timestamptz FROM pgretention._expired_leaves(1, 'all', %s)", [at])
    kept_total = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [bound])
    kept_subject = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s AND caller = %s", [bound, SUBJECT])
    held = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s AND caller = %s", [hold_from, SUBJECT])
    assert 0 < held < kept_subject
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [SUBJECT]})])

    run_errors: list[BaseException] = []
    erasure: dict[str, Any] = {"attempts": 0, "refusals": []}

    def runner() -> None:
        try:
            with db.connect() as conn:
                conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [at])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            run_errors.append(exc)

    def eraser() -> None:
        with db.connect() as conn:
            while erasure["attempts"] < 50:
                erasure["attempts"] += 1
                try:
                    erasure["result"] = conn.execute("SELECT pgretention.request_fulfil(%s)", [rid]).fetchone()[0]  # type: ignore[index]
                    return
                except RETRYABLE as exc:
                    erasure["refusals"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    time.sleep(0.05)
                except psycopg.Error as exc:
                    erasure["error"] = exc
                    return

    run_thread = threading.Thread(target=runner)
    erase_thread = threading.Thread(target=eraser)
    run_thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (db.one("SELECT count(*) FROM pgretention.partition_op") or 0) < 3:
        time.sleep(0.005)
    erase_thread.start()
    dropped_at_start = db.one("SELECT count(*) FROM pgretention.partition_op")
    run_thread.join(120)
    erase_thread.join(120)
    assert not run_thread.is_alive() and not erase_thread.is_alive(), "deadlocked"
    print(f"erasure started after {dropped_at_start} of {len(expired)} drops; attempts {erasure['attempts']};"
          f" refusals {erasure['refusals']}")
    assert run_errors == []
    assert "error" not in erasure, erasure.get("error")
    assert erasure["result"]["status"] == "partially_fulfilled"
    assert erasure["result"]["held_rows"] == held
    status, summary = last_run(db)
    assert status == "ok", summary
    assert summary["totals"]["partitions_dropped"] == len(expired)
    # exact: expired partitions gone, the subject's other rows erased, held rows kept
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s", [bound]) == 0
    assert db.one("SELECT count(*) FROM cdr WHERE caller = %s", [SUBJECT]) == held
    assert db.one("SELECT count(*) FROM cdr WHERE caller = %s AND started_at < %s", [SUBJECT, hold_from]) == 0
    assert db.one("SELECT count(*) FROM cdr") == kept_total - (kept_subject - held)
    assert db.one("SELECT status FROM pgretention.subject_request WHERE id = %s", [rid]) == "partially_fulfilled"
    # the other subject's row was rescued into the hold store when its partition was dropped
    assert db.one("SELECT count(*) FROM pgretention.hold_store WHERE row_data->>'callee' = %s", [HELD_SUBJECT]) == 1
    assert db.one("SELECT count(*) FROM pgretention.hold_store") == 1
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 0
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'request.erasure'") == 1
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'") == len(expired)
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


# -- c. the CLI runner and the pg_cron job's statement started together -------------------------------
def test_cli_run_and_cron_statement_at_once(installed: DB) -> None:
    """test_partition_engine covers two SQL runners; here the console script meets the cron job's CALL."""
    db = installed
    at = daily_cdr(db, days=20, rows_per_day=200, drop_after="2 days")
    expired = expired_partitions(db, at)
    assert len(expired) >= 16
    total = db.one("SELECT count(*) FROM cdr")
    cron_error: list[BaseException] = []
    cron_notices: list[str] = []
    go = threading.Event()

    def cron() -> None:
        try:
            with db.connect() as conn:
                conn.add_notice_handler(lambda d: cron_notices.append(d.message_primary or ""))
                go.wait(10)
                conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'cron')", [at])
        except BaseException as exc:  # noqa: BLE001 - reported below
            cron_error.append(exc)

    th = threading.Thread(target=cron)
    th.start()
    cmd = [sys.executable, "-m", "pgretention", "--dsn", db.dsn, "--format", "json", "run",
           "--now", at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    cli = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the CLI spends its first second importing; start the cron statement when it connects
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not db.one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgretention'"):
        time.sleep(0.01)
    go.set()
    out, err = cli.communicate(timeout=120)
    th.join(120)
    assert cli.returncode == 0, err
    assert "Traceback" not in err
    assert cron_error == []
    messages = json.loads(out)["messages"] + cron_notices
    dropped = [m for m in messages if "dropped partition" in m]
    assert len(dropped) == len(expired)
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") == len(expired)
    assert db.one("SELECT count(DISTINCT partition_name) FROM pgretention.partition_op") == len(expired)
    assert db.one("SELECT count(*) FROM cdr") == total - sum(expired.values())
    runs = db.all("SELECT runner, status, (summary->'totals'->>'partitions_dropped')::int FROM pgretention.job_run"
                  " ORDER BY id")
    assert all(r[1] == "ok" for r in runs)
    assert sum(r[2] or 0 for r in runs) == len(expired)
    assert {r[0] for r in runs} <= {"cli", "cron"}
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'") == len(expired)
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


# -- d. the anonymiser meets an application transaction on the partition it rewrites ------------------
def test_anonymiser_retries_a_partition_busy_with_a_late_write(installed: DB) -> None:
    db = installed
    at = daily_cdr(db, days=40, rows_per_day=100, drop_after="400 days")
    db.execute("SELECT pgretention.set_class('public.cdr', 'all', '400 days', '30 days')")
    db.execute("UPDATE cdr SET caller = 'secret ' || id")
    for col, method in (("caller", "redact"), ("callee", "e164_prefix"), ("id", "keep"), ("duration", "keep")):
        db.execute("SELECT pgretention.anon_set_rule('public.cdr', %s, %s)", [col, method])
    # the first partition the run will rewrite (an application lock on the parent would hold up every swap
    # before it; the anonymiser's prepare step is what meets the busy partition)
    leaf, lower = db.all("SELECT leaf::text, lower_abs FROM pgretention._anon_due(1, 'all', %s) ORDER BY lower_abs"
                         " LIMIT 1", [at])[0]
    due = len(db.all("SELECT 1 FROM pgretention._anon_due(1, 'all', %s)", [at]))
    old = db.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamptz - interval '31 days'", [at])
    # a loader writes a late record of that day straight into its partition (as bulk loaders do), in a
    # transaction that stays open for half a second: the partition is busy, the parent is not
    app = db.connect(autocommit=False)
    app.execute(f"INSERT INTO {leaf} (id, started_at, caller) VALUES (-1, %s::timestamptz + interval '1 hour',"  # noqa: S608
                " 'secret late')", [lower])
    timer = threading.Timer(0.5, app.commit)
    timer.start()
    try:
        with db.connect() as conn:
            conn.execute("CALL pgretention.run_anonymiser(%s)", [at])
            conn.execute("CALL pgretention.run_anonymiser(%s)", [at])
    finally:
        timer.join()
        app.close()
    assert db.one("SELECT count(*) FROM cdr WHERE id = -1") == 1
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'") == due
    assert db.one("SELECT count(*) FROM cdr WHERE caller LIKE 'secret%%' AND started_at < %s::timestamptz"
                  " - interval '31 days'", [at]) == 0
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamptz - interval '31 days'", [at]) == old + 1
    assert db.one(f"SELECT count(*) FROM {leaf} WHERE caller = '[redacted]'") > 0  # noqa: S608 - a partition name
    assert db.one("SELECT count(*) FROM pg_class WHERE relname LIKE '%%pgr_anon'") == 0
