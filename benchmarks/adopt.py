"""adopt: convert a plain CDR table online while 4 connections insert, then empty its history.

A plain table of 10M CDRs at scale 1 (60 days, 30 of them past drop_after; a primary key on id and
an index on started_at, the shape of a switch's CDR table) is adopted with
``CALL pgretention.adopt(..., p_key => 'local')`` while 4 writer threads, one connection each,
insert single rows with the application's plain INSERT (no pause between inserts; a 5 s statement
timeout counts as a failure). Measured:

* the longest time one insert took during the adoption (its lock wait included), and the inserts
  that failed (target 0);
* the total adoption time (CHECK NOT VALID, validation while writers go on, the swap);
* the first run afterwards, which deletes the expired half of the historical partition in batches
  (writers still inserting);
* the run at a reference time where all of the historical partition has expired: the time until
  the partition is gone (the engine detaches and drops it whole).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.results import Check, Result, fmt_ms, log, pyplot, save_figure
from benchmarks.harness.server import Context, connect, one, server_today
from benchmarks.harness.tables import CDR_COLUMNS, DROP_AFTER_DAYS, load, qualified
from pgretention.generator import plan_days

NAME = "adopt"
TABLE = "public.cdr_switch"
ROWS = 10_000_000
DAYS = 2 * DROP_AFTER_DAYS
WRITERS = 4
INSERT = "INSERT INTO public.cdr_switch (id, started_at, caller, callee, duration) VALUES (%s, now(), %s, %s, %s)"


class Writers:
    """Writer threads recording (seconds since start, latency ms, ok) for every insert."""

    def __init__(self, dsn: str, n: int) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.samples: list[list[tuple[float, float, bool]]] = [[] for _ in range(n)]
        self.errors: list[str] = []
        self.t0 = time.perf_counter()
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(n)]

    def _work(self, i: int) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="bench-writer") as conn:
            conn.execute("SET statement_timeout = '5s'")
            k = 0
            while not self.stop.is_set():
                row_id = 10**12 + i * 10**9 + k
                t = time.perf_counter()
                ok = True
                try:
                    conn.execute(INSERT, [row_id, f"+3161{k:07d}", f"+3162{k:07d}", k % 600])
                except psycopg.Error as exc:
                    ok = False
                    self.errors.append(str(exc).splitlines()[0])
                self.samples[i].append((t - self.t0, (time.perf_counter() - t) * 1e3, ok))
                k += 1

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def window(self, a: float, b: float) -> list[tuple[float, float, bool]]:
        return [s for w in self.samples for s in w if a <= s[0] <= b]


def run(ctx: Context) -> Result:
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn)


def _run(ctx: Context, dsn: str) -> Result:
    rows = max(10_000, round(ROWS * ctx.scale))
    res = Result(NAME, "online adoption of a plain CDR table under insert load", ctx.scale)
    res.params = {
        "table": f"{rows:,} rows over {DAYS} days, primary key (id), index (started_at); drop_after {DROP_AFTER_DAYS} days",
        "writers": f"{WRITERS} connections inserting single rows back to back, 5 s statement timeout",
        "adopt": "CALL pgretention.adopt(table, 'started_at', '30 days', p_key => 'local'), lock_timeout 20ms",
    }
    with connect(dsn) as conn:
        today = server_today(conn)
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(qualified(TABLE), sql.SQL(CDR_COLUMNS)))
    per_day = rows // DAYS
    load(dsn, [TABLE], plan_days(today, [(DAYS - d, per_day) for d in range(DAYS)]), jobs=ctx.jobs)
    with connect(dsn) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(qualified(TABLE)))
        conn.execute(sql.SQL("CREATE INDEX ON {} (started_at)").format(qualified(TABLE)))
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(qualified(TABLE)))
        loaded = int(one(conn, sql.SQL("SELECT count(*) FROM {}").format(qualified(TABLE))))
        size = int(one(conn, "SELECT pg_total_relation_size(%s::regclass)", [TABLE]))
    log(f"adopt: {loaded:,} rows ({size / 1e9:.2f} GB with indexes); writers start")

    writers = Writers(dsn, WRITERS)
    writers.start()
    time.sleep(2)
    with connect(dsn) as conn:
        a0 = time.perf_counter() - writers.t0
        conn.execute("CALL pgretention.adopt(%s, 'started_at', %s, p_key => 'local')", [TABLE, f"{DROP_AFTER_DAYS} days"])
        a1 = time.perf_counter() - writers.t0
        cutover_at = one(conn, "SELECT cutover_at FROM pgretention.adoption ORDER BY id DESC LIMIT 1")
        log(f"adopt: adopted in {a1 - a0:.1f}s; first run (expired half of the history, in batches)")
        time.sleep(2)
        r0 = time.perf_counter() - writers.t0
        conn.execute("CALL pgretention.run(p_runner => 'bench')")
        r1 = time.perf_counter() - writers.t0
        batch_deleted = int(one(conn, "SELECT (summary -> 'totals' ->> 'rows_deleted')::bigint FROM pgretention.job_run"
                                      " ORDER BY id DESC LIMIT 1"))
        time.sleep(1)
    writers.finish()
    during = writers.window(a0, a1)
    during_run = writers.window(r0, r1)
    all_samples = writers.window(0, float("inf"))
    inserted = sum(1 for s in all_samples if s[2])
    with connect(dsn) as conn:
        total = int(one(conn, sql.SQL("SELECT count(*) FROM {}").format(qualified(TABLE))))
        lost = loaded + inserted - batch_deleted - total
        # all of the history past drop_after: the engine drops the historical partition whole
        at = cutover_at + timedelta(days=DROP_AFTER_DAYS, hours=1)
        conn.execute("SELECT pgretention.simulation_enable()")  # a reference time ahead: this session only
        d0 = time.perf_counter()
        conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'bench')", [at])
        drop_ms = (time.perf_counter() - d0) * 1e3
        gone = one(conn, "SELECT to_regclass('public.cdr_switch_adopted') IS NULL")
        state = one(conn, "SELECT summary -> 'totals' FROM pgretention.job_run ORDER BY id DESC LIMIT 1")

    longest = max((s[1] for s in during), default=0.0)
    longest_run = max((s[1] for s in during_run), default=0.0)
    failed = sum(1 for s in all_samples if not s[2])
    res.figures = {
        "rows": loaded, "bytes": size, "inserts_during_adoption": len(during),
        "longest_insert_ms_during_adoption": round(longest, 1),
        "p99_insert_ms_during_adoption": round(_pct([s[1] for s in during], 0.99), 2),
        "inserts_failed": failed, "adoption_s": round(a1 - a0, 2),
        "first_run_s": round(r1 - r0, 2), "first_run_rows_deleted": batch_deleted,
        "first_run_longest_insert_ms": round(longest_run, 1),
        "historical_drop_run_ms": round(drop_ms, 1), "historical_gone": bool(gone), "drop_run_totals": state,
        "rows_lost": lost, "errors": writers.errors[:5],
    }
    res.headers = ["phase", "seconds", "inserts", "longest insert", "p99 insert"]
    res.rows = [
        ["adopt (check, validate, swap)", f"{a1 - a0:.1f}", f"{len(during):,}", fmt_ms(longest),
         fmt_ms(_pct([s[1] for s in during], 0.99))],
        [f"first run: {batch_deleted:,} expired rows deleted in batches", f"{r1 - r0:.1f}", f"{len(during_run):,}",
         fmt_ms(longest_run), fmt_ms(_pct([s[1] for s in during_run], 0.99))],
        ["run after the whole history expired (partition dropped)", f"{drop_ms / 1e3:.2f}", "-", "-", "-"],
    ]
    res.checks = [
        Check("inserts failed during adoption", failed, 0),
        Check("rows lost", lost, 0),
        Check("longest insert during adoption", round(longest, 1), 1000, " ms"),
        Check("historical partition gone after its rows expired", 1 if gone else 0, 1, at_least=True),
    ]
    res.plots = [_plot(ctx, writers, (a0, a1), (r0, r1))]
    return res


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _plot(ctx: Context, writers: Writers, adopt: tuple[float, float], first_run: tuple[float, float]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    pts: list[Any] = writers.window(0, float("inf"))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, alpha=0.4, label="insert latency")
    ax.axvspan(*adopt, color="tab:orange", alpha=0.2, label="adopt")
    ax.axvspan(*first_run, color="tab:green", alpha=0.2, label="first run (batch deletes)")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("insert latency (ms)")
    ax.set_title(f"adopting a plain table under {WRITERS} inserting connections (scale {ctx.scale:g})")
    ax.legend(loc="upper right")
    return save_figure(fig, ctx.out, NAME)
