"""Concurrency of the partition engine: the purge under heavy COPY ingest, the CLI and the pg_cron
statement running at once.

Already covered elsewhere and not repeated here: two SQL runners started together
(test_partition_engine.py::test_two_runners_started_together), a long report holding the table
during a purge (test_partition_engine.py::test_long_report_bounds_insert_latency_and_defers),
adoption while the application inserts (tests/adopt), an erasure during a purge
(tests/subjects/test_concurrency.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg

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
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True



# -- b. the CLI runner and the pg_cron job's statement started together -------------------------------
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
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True
