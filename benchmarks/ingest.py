"""ingest: steady inserts and a long report while expired partitions are purged.

Two phases on two tables with the same setup (35 days of CDRs, 5 of them expired; indexes on
time, caller and callee): pg_partman's own retention in one, ``pgretention.run()`` in the other.
In each phase:

* 4 writer threads, one connection each, insert single rows at 400 rows/s in total and record
  every insert's latency; writers give up on an insert after a 5 s statement timeout (what an
  application would do) and count it as failed;
* after 2 s a report connection opens a transaction, reads the whole table (``count(*)`` over
  the parent) and keeps the transaction open, 60 s at scale 1 (at least 10 s);
* 1 s into the report the purge starts; writers keep going until the purge is done and then
  3 s more.

pg_partman drops the partitions without a lock timeout: its request for the parent's ACCESS
EXCLUSIVE lock waits for the report, and every insert queues behind it. pgretention asks for the
lock with a short lock_timeout and retries with backoff, so inserts wait at most that long and
the partitions go once the report is done.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.results import Check, Result, fmt_ms, log, pyplot, save_figure
from benchmarks.harness.server import Context, checkpoint, connect, one, server_today
from benchmarks.harness.tables import (
    DROP_AFTER_DAYS,
    add_indexes,
    create_partman_table,
    create_pgretention_table,
    drop_partman_table,
    drop_pgretention_table,
    load,
    partman_schema,
    qualified,
    settle,
    time_partitions,
)
from pgretention.generator import plan_days

NAME = "ingest"
WRITERS = 4
RATE = 400.0  # inserts per second, all writers together
WRITER_TIMEOUT_S = 5.0
WRITER_TIMEOUT = f"{WRITER_TIMEOUT_S:g}s"
REPORT_S = 60.0  # at scale 1
MIN_REPORT_S = 10.0
WARMUP_S = 2.0
PURGE_DELAY_S = 1.0
TAIL_S = 3.0
PURGE_CAP_S = 120.0  # a purge still running this long after the report's end is cancelled
DAYS = 35
EXPIRED_DAYS = DAYS - DROP_AFTER_DAYS
ROWS_PER_DAY = 20_000  # at scale 1

T_PARTMAN = "public.cdr_ingest_partman"
T_PGRET = "public.cdr_ingest_pgret"

MAX_LATENCY_MS = 50.0
MAX_PURGE_AFTER_REPORT_S = 1.0


@dataclass
class Insert:
    t: float  # seconds since the phase started, when the insert was sent
    ms: float
    ok: bool


def run(ctx: Context) -> Result:
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn)


def _run(ctx: Context, dsn: str) -> Result:
    report_s = max(MIN_REPORT_S, REPORT_S * ctx.scale)
    rows_per_day = max(2000, round(ROWS_PER_DAY * ctx.scale))
    res = Result(NAME, "insert latency while a long report runs and expired partitions are purged", ctx.scale)
    res.params = {
        "writers": f"{WRITERS} connections, {RATE:g} single-row inserts/s in total, "
        f"statement_timeout {WRITER_TIMEOUT}",
        "report": f"one transaction: count(*) over the table, held open {report_s:g} s",
        "table": f"{DAYS} days x {rows_per_day:,} rows ({EXPIRED_DAYS} days expired), indexes on started_at, "
        "caller, callee",
        "phases": "pg_partman run_maintenance, then pgretention run(); separate tables, same setup",
    }
    with connect(dsn) as conn:
        today = server_today(conn)
        days = plan_days(today, [(DAYS - k, rows_per_day) for k in range(DAYS)])
        start = today - timedelta(days=DAYS)
        create_partman_table(conn, T_PARTMAN, start)
        create_pgretention_table(conn, T_PGRET, start)
    load(dsn, [T_PARTMAN, T_PGRET], days, jobs=ctx.jobs)
    with connect(dsn) as conn:
        for table in (T_PARTMAN, T_PGRET):
            add_indexes(conn, table)
            settle(conn, table)

    phases: dict[str, dict[str, Any]] = {}
    phases["pg_partman"] = _phase(dsn, "pg_partman", T_PARTMAN, report_s)
    with connect(dsn) as conn:
        drop_partman_table(conn, T_PARTMAN)
    phases["pgretention"] = _phase(dsn, "pgretention", T_PGRET, report_s)
    with connect(dsn) as conn:
        drop_pgretention_table(conn, T_PGRET)

    res.headers = [
        "purge method",
        "inserts",
        "failed",
        "p50",
        "p99",
        "max",
        "purge start",
        "purge done",
        "done - report end",
        "partitions dropped",
    ]
    for label, p in phases.items():
        res.rows.append(
            [
                label,
                f"{p['inserts']:,}",
                f"{p['failed']:,}",
                fmt_ms(p["p50_ms"]),
                fmt_ms(p["p99_ms"]),
                fmt_ms(p["max_ms"]),
                f"{p['purge_start_s']:.1f} s",
                f"{p['purge_end_s']:.1f} s",
                f"{p['purge_after_report_s']:+.2f} s",
                f"{p['partitions_dropped']}",
            ]
        )
    pgr, pm = phases["pgretention"], phases["pg_partman"]
    res.ratios = [
        f"report: {report_s:g} s from {pgr['report_start_s']:.1f} s to {pgr['report_end_s']:.1f} s "
        "(times relative to the phase start)",
        f"max insert latency: pg_partman / pgretention = {pm['max_ms'] / max(pgr['max_ms'], 1e-9):,.0f}x; "
        f"failed inserts: pg_partman {pm['failed']:,}, pgretention {pgr['failed']:,}",
    ]
    res.checks = [
        Check("pgretention max insert latency", pgr["max_ms"], MAX_LATENCY_MS, " ms"),
        Check("pgretention failed inserts", pgr["failed"], 0),
        Check(
            "pgretention purge done, seconds after the report's end",
            pgr["purge_after_report_s"],
            MAX_PURGE_AFTER_REPORT_S,
            " s",
        ),
    ]
    for label, p in phases.items():
        if p["purge_error"]:
            res.notes.append(f"{label} purge error: {p['purge_error']}")
        if p["partitions_dropped"] != EXPIRED_DAYS:
            res.notes.append(
                f"{label}: {p['partitions_dropped']} partitions dropped, expected {EXPIRED_DAYS}"
            )
    res.figures = {k: {kk: vv for kk, vv in v.items() if kk != "inserts_raw"} for k, v in phases.items()}
    res.plots.append(_plot(phases, ctx.out, ctx.scale))
    return res


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def _phase(dsn: str, method: str, table: str, report_s: float) -> dict[str, Any]:
    with connect(dsn) as conn:
        checkpoint(conn)
        before = len(time_partitions(conn, table))
        purge_sql: sql.Composable
        if method == "pg_partman":
            purge_sql = sql.SQL("SELECT {}.run_maintenance(p_parent_table := {}, p_jobmon := false)").format(
                sql.Identifier(partman_schema(conn)), sql.Literal(table)
            )
        else:
            purge_sql = sql.SQL(
                "CALL pgretention.run(p_now => now(), p_table => {}, p_runner => 'bench')"
            ).format(sql.Literal(table))
    insert_sql = sql.SQL(
        "INSERT INTO {} (id, started_at, caller, callee, duration) VALUES (%s, now(), %s, %s, %s)"
    ).format(qualified(table))
    log(f"ingest: phase {method}: writers start, report of {report_s:g} s after {WARMUP_S:g} s")

    stop = threading.Event()
    locked = threading.Event()
    records: list[list[Insert]] = [[] for _ in range(WRITERS)]
    events: dict[str, float] = {}
    failures: list[str] = []
    purge_conn: list[psycopg.Connection[Any]] = []
    t0 = time.perf_counter()

    def now() -> float:
        return time.perf_counter() - t0

    def writer(k: int) -> None:
        rng = random.Random(k)
        per_writer = RATE / WRITERS
        conn = connect(dsn)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(WRITER_TIMEOUT)))
        i = 0
        try:
            while not stop.is_set():
                due = (i + k / WRITERS) / per_writer
                delay = due - now()
                if delay > 0:
                    time.sleep(delay)
                sent = now()
                ok = True
                try:
                    conn.execute(
                        insert_sql,
                        [
                            10**12 + k * 10**9 + i,
                            f"+316{rng.randrange(10**7, 10**8)}",
                            f"+316{rng.randrange(10**7, 10**8)}",
                            int(rng.expovariate(1 / 180)),
                        ],
                    )
                except psycopg.Error:
                    ok = False
                    if conn.broken or conn.closed:
                        conn = connect(dsn)
                        conn.execute(
                            sql.SQL("SET statement_timeout = {}").format(sql.Literal(WRITER_TIMEOUT))
                        )
                records[k].append(Insert(sent, (now() - sent) * 1e3, ok))
                i += 1
        finally:
            conn.close()

    def report() -> None:
        with connect(dsn, autocommit=False) as conn:
            time.sleep(max(0.0, WARMUP_S - now()))
            events["report_start_s"] = now()
            events["report_rows"] = float(
                one(conn, sql.SQL("SELECT count(*) FROM {}").format(qualified(table)))
            )
            events["report_read_s"] = now()
            locked.set()
            time.sleep(max(0.0, events["report_start_s"] + report_s - now()))
            conn.commit()
            events["report_end_s"] = now()

    def purge() -> None:
        with connect(dsn) as conn:
            purge_conn.append(conn)
            locked.wait()
            time.sleep(PURGE_DELAY_S)
            events["purge_start_s"] = now()
            try:
                conn.execute(purge_sql)
            except psycopg.Error as exc:
                failures.append(f"purge: {str(exc).strip().splitlines()[0]}")
            events["purge_end_s"] = now()

    def guarded(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # reported by the main thread
            failures.append(f"{fn.__name__}: {exc!r}")
            locked.set()

    threads = [threading.Thread(target=guarded, args=(writer, k), daemon=True) for k in range(WRITERS)]
    rep = threading.Thread(target=guarded, args=(report,), daemon=True)
    pur = threading.Thread(target=guarded, args=(purge,), daemon=True)
    for t in [*threads, rep, pur]:
        t.start()
    try:
        rep.join(WARMUP_S + report_s + 60)
        pur.join(PURGE_CAP_S)
        if pur.is_alive() and purge_conn:
            failures.append(f"purge: still running {PURGE_CAP_S:g} s after the report's end; cancelled")
            purge_conn[0].cancel()
            pur.join(30)
        time.sleep(TAIL_S)
    finally:
        stop.set()
        for t in threads:
            t.join(WRITER_TIMEOUT_S + 5)
    events.setdefault("purge_start_s", math.nan)
    events.setdefault("purge_end_s", math.nan)
    if "report_end_s" not in events:
        raise RuntimeError(f"ingest phase {method}: the report did not finish: {failures}")

    with connect(dsn) as conn:
        after = len(time_partitions(conn, table))
    inserts = sorted((r for rs in records for r in rs), key=lambda r: r.t)
    lat = [r.ms for r in inserts]
    out: dict[str, Any] = {
        "inserts": len(inserts),
        "failed": sum(1 for r in inserts if not r.ok),
        "max_ms": max(lat, default=0.0),
        "p99_ms": _percentile(lat, 99),
        "p50_ms": _percentile(lat, 50),
        "p99_during_report_ms": _percentile(
            [r.ms for r in inserts if events["report_start_s"] <= r.t <= events["report_end_s"]], 99
        ),
        **events,
        "purge_after_report_s": events["purge_end_s"] - events["report_end_s"],
        "partitions_dropped": before - after,
        "purge_error": "; ".join(f for f in failures if f.startswith("purge")),
        "thread_errors": [f for f in failures if not f.startswith("purge")],
        "inserts_raw": [(round(r.t, 4), round(r.ms, 3), r.ok) for r in inserts],
    }
    log(
        f"ingest: phase {method}: {out['inserts']:,} inserts, {out['failed']} failed,"
        f" max {fmt_ms(out['max_ms'])}, "
        f"p99 {fmt_ms(out['p99_ms'])}, purge done {out['purge_after_report_s']:+.2f} s after the report's end"
    )
    if out["thread_errors"]:
        raise RuntimeError(f"ingest phase {method}: {out['thread_errors']}")
    return out


def _plot(phases: dict[str, dict[str, Any]], out: Path, scale: float) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(len(phases), 1, figsize=(10, 3.4 * len(phases)), sharex=True, sharey=True)
    for ax, (label, p) in zip(axes, phases.items(), strict=True):
        ok = [(t, ms) for t, ms, good in p["inserts_raw"] if good]
        bad = [(t, ms) for t, ms, good in p["inserts_raw"] if not good]
        ax.axvspan(p["report_start_s"], p["report_end_s"], color="#dddddd", label="report transaction open")
        if ok:
            ax.scatter(
                [t for t, _ in ok], [max(ms, 0.01) for _, ms in ok], s=3, color="#3a7d44", label="insert"
            )
        if bad:
            ax.scatter(
                [t for t, _ in bad],
                [ms for _, ms in bad],
                s=18,
                marker="x",
                color="#b0413e",
                label="failed insert (timeout)",
            )
        if not math.isnan(p["purge_start_s"]):
            ax.axvline(p["purge_start_s"], color="#6c8ebf", linestyle="--", label="purge start")
        if not math.isnan(p["purge_end_s"]):
            ax.axvline(p["purge_end_s"], color="#6c8ebf", label="purge done")
        ax.axhline(
            MAX_LATENCY_MS, color="#b0413e", linestyle=":", linewidth=1, label=f"{MAX_LATENCY_MS:g} ms"
        )
        ax.set_yscale("log")
        ax.set_ylabel("insert latency (ms)")
        ax.set_title(f"{label}: max {fmt_ms(p['max_ms'])}, p99 {fmt_ms(p['p99_ms'])}, {p['failed']} failed")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds since the phase started")
    fig.suptitle(f"insert latency during a long report and a purge (scale {scale:g})")
    return save_figure(fig, out, NAME)
