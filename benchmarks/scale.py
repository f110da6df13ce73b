"""scale: a year of CDRs (100M rows over 400 daily partitions at scale 1), 30 expired partitions purged.

Not part of the default set (it needs about 20 GB and a quarter of an hour at scale 1): run it with
``--only scale``. Steps:

1. a pgretention table with daily partitions, ``drop_after`` 370 days, the last 400 days loaded with
   ``pgretention.generator`` (realistic CDRs: diurnal curve, E.164 numbers of several countries,
   heavy-tailed durations), in batches with a ``CHECKPOINT`` between them (WAL stays bounded);
2. indexes on ``started_at``, ``caller``, ``callee`` built afterwards, then the expired partitions
   analyzed (their row counts are audited);
3. ``CHECKPOINT``, then one writer inserts single rows into today's partition at 200/s while
   ``CALL pgretention.run()`` drops the 30 expired partitions.

Figures: load rate, index build time, sizes, purge time, time per dropped partition (from the
engine's own records), WAL of the purge, the filesystem's cost of freeing the same bytes, and the
writer's insert latency during the purge.
"""

from __future__ import annotations

import statistics
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.meters import MB, fs_free_cost, timed, total_size, wal_lsn, wal_since
from benchmarks.harness.results import Check, Result, fmt_bytes, fmt_ms, log
from benchmarks.harness.server import Context, checkpoint, connect, one, server_today
from benchmarks.harness.tables import add_indexes, qualified
from pgretention import generator

NAME = "scale"
DAYS = 400
EXPIRED = 30
ROWS_PER_DAY = 250_000  # at scale 1: 400 x 250k = 100M rows
DROP_AFTER_DAYS = DAYS - EXPIRED - 1  # the partition of day today-k is expired for k >= drop_after
BATCH_DAYS = 40
TABLE = "public.cdr_scale"
WRITER_RATE = 200.0
WRITER_TIMEOUT = "5s"

MS_PER_PARTITION = 5.0
MAX_WAL_PER_PARTITION = 1 * MB
MAX_LATENCY_MS = 50.0


def run(ctx: Context) -> Result:
    rows_per_day = max(1000, round(ROWS_PER_DAY * ctx.scale))
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn, rows_per_day)


def _writer(dsn: str, stop: threading.Event, out: list[tuple[float, float, bool]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = '{WRITER_TIMEOUT}'")
        stmt = sql.SQL("INSERT INTO {} (id, tenant, region, started_at, caller, callee, duration_s)"
                       " VALUES (%s, 'tenant-001', 'NL', now(), '+31612345678', '+31687654321', 60)").format(
            qualified(TABLE))
        t0 = time.perf_counter()
        n = 0
        while not stop.is_set():
            due = t0 + n / WRITER_RATE
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            start = time.perf_counter()
            try:
                conn.execute(stmt, [-1 - n], prepare=True)
                ok = True
            except psycopg.Error:
                ok = False
            out.append((start - t0, (time.perf_counter() - start) * 1e3, ok))
            n += 1


def _run(ctx: Context, dsn: str, rows_per_day: int) -> Result:
    total_rows = DAYS * rows_per_day
    res = Result(NAME, f"{total_rows:,} CDRs in {DAYS} daily partitions, {EXPIRED} expired partitions purged",
                 ctx.scale)
    res.params = {
        "data": f"{DAYS} days x {rows_per_day:,} rows (pgretention.generator CDRs), indexes on started_at, "
        "caller, callee",
        "retention": f"drop_after {DROP_AFTER_DAYS} days; daily partitions; {EXPIRED} partitions expired",
        "during the purge": f"1 writer, {WRITER_RATE:g} single-row inserts/s into today's partition, "
        f"statement_timeout {WRITER_TIMEOUT}",
    }
    fig: dict[str, Any] = {"rows": total_rows, "days": DAYS, "rows_per_day": rows_per_day}
    with connect(dsn) as conn:
        today = server_today(conn)
        start = today - timedelta(days=DAYS - 1)
        conn.execute(
            "SELECT pgretention.table_create(%s, %s, 'started_at', '1 day', %s::jsonb, p_start => %s)",
            [TABLE, generator.CDR_COLUMNS, f'{{"default": {{"drop_after": "{DROP_AFTER_DAYS} days"}}}}', start])
        fig["partitions_before"] = one(conn, "SELECT count(*) FROM pg_partition_tree(%s::regclass) WHERE isleaf",
                                       [TABLE])
    log(f"scale: loading {total_rows:,} rows into {DAYS} daily partitions ({ctx.jobs} jobs)")
    load_s = 0.0
    for first_day in range(0, DAYS, BATCH_DAYS):
        n = min(BATCH_DAYS, DAYS - first_day)
        r = generator.load(dsn, TABLE, start + timedelta(days=first_day), n, rows_per_day,
                           first_id=1 + first_day * rows_per_day, jobs=ctx.jobs)
        load_s += r.seconds
        with connect(dsn) as conn:
            checkpoint(conn)
        log(f"scale: {first_day + n}/{DAYS} days loaded ({r.rows_per_second:,.0f} rows/s for this batch)")
    fig["load_s"] = round(load_s, 1)
    fig["load_rows_per_s"] = round(total_rows / load_s)
    with connect(dsn) as conn:
        fig["heap_bytes_before_indexes"] = total_size(conn, TABLE)
        index_ms, _ = timed(add_indexes, conn, TABLE)
        fig["index_build_s"] = round(index_ms / 1e3, 1)
        log(f"scale: 3 indexes built in {index_ms / 1e3:.0f}s")
        checkpoint(conn)
        cutoff = today - timedelta(days=DROP_AFTER_DAYS)
        expired = [r[0] for r in conn.execute(
            "SELECT l.leaf::text FROM pgretention.managed_table m"
            " CROSS JOIN LATERAL pgretention._expired_leaves(m.id, m.default_class, now()) l"
            " WHERE format('%%I.%%I', m.table_schema, m.table_name) = %s", [TABLE])]
        for leaf in expired:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(leaf)))
        fig["expired_partitions"] = len(expired)
        fig["cutoff"] = cutoff.isoformat()
        fig["total_bytes_before"] = total_size(conn, TABLE)
        expired_bytes = int(one(conn, "SELECT sum(pg_total_relation_size(x::regclass)) FROM unnest(%s::text[]) x",
                                [expired]) or 0)
        fig["expired_bytes"] = expired_bytes
        checkpoint(conn)

        latencies: list[tuple[float, float, bool]] = []
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(dsn, stop, latencies))
        writer.start()
        time.sleep(2.0)
        lsn = wal_lsn(conn)
        t_start = time.perf_counter()
        conn.execute("CALL pgretention.run(p_now => now(), p_table => %s, p_runner => 'bench')", [TABLE])
        purge_ms = (time.perf_counter() - t_start) * 1e3
        wal = wal_since(conn, lsn)
        time.sleep(2.0)
        stop.set()
        writer.join()
        ops = conn.execute(
            "SELECT extract(epoch FROM done_at - detached_at) * 1e3, bytes, rows_estimate FROM pgretention.partition_op"
            " WHERE state = 'done' ORDER BY id").fetchall()
        fig["total_bytes_after"] = total_size(conn, TABLE)
        fig["partitions_after"] = one(conn, "SELECT count(*) FROM pg_partition_tree(%s::regclass) WHERE isleaf",
                                      [TABLE])
        status = one(conn, "SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1")
    dropped = len(ops)
    fig["purge"] = {
        "ms": round(purge_ms, 1), "partitions_dropped": dropped, "run_status": status,
        "ms_per_partition": round(purge_ms / max(dropped, 1), 2),
        "drop_ms_per_partition_median": round(statistics.median(float(o[0]) for o in ops), 2) if ops else None,
        "rows_dropped": int(sum(int(o[2] or 0) for o in ops)), "bytes_dropped": int(sum(int(o[1] or 0) for o in ops)),
        "wal_bytes": wal, "wal_bytes_per_partition": round(wal / max(dropped, 1)),
    }
    fs = fs_free_cost(ctx.fs_dir, fig["purge"]["bytes_dropped"])
    fig["filesystem"] = fs
    t0 = latencies[0][0] if latencies else 0.0
    during = [x for x in latencies if 2.0 <= x[0] - t0 <= 2.0 + purge_ms / 1e3 + 0.5]
    ms = sorted(x[1] for x in during if x[2])
    fig["inserts_during_purge"] = {
        "inserts": len(during), "failed": sum(1 for x in during if not x[2]),
        "p50_ms": round(ms[len(ms) // 2], 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
    }
    res.figures = fig
    p, ins = fig["purge"], fig["inserts_during_purge"]
    res.headers = ["figure", "value"]
    res.rows = [
        ["rows loaded", f"{total_rows:,} in {fig['load_s']:.0f} s ({fig['load_rows_per_s']:,} rows/s)"],
        ["3 indexes built", f"{fig['index_build_s']:.0f} s"],
        ["table size", f"{fmt_bytes(fig['total_bytes_before'])} in {fig['partitions_before']} partitions"],
        ["purge (run)", f"{fmt_ms(p['ms'])}: {dropped} partitions, {p['rows_dropped']:,} rows, "
                        f"{fmt_bytes(p['bytes_dropped'])}"],
        ["per partition", f"{fmt_ms(p['ms_per_partition'])} (drop step median {fmt_ms(p['drop_ms_per_partition_median'] or 0)})"],
        ["filesystem frees the same bytes", fmt_ms(fs["free_ms"])],
        ["WAL of the purge", f"{fmt_bytes(wal)} ({fmt_bytes(p['wal_bytes_per_partition'])} per partition)"],
        ["inserts during purge", f"{ins['inserts']} (failed {ins['failed']}), p50 {ins['p50_ms']} ms, "
                                 f"p99 {ins['p99_ms']} ms, max {ins['max_ms']} ms"],
    ]
    res.checks = [
        Check("all expired partitions dropped", dropped, EXPIRED, at_least=True),
        Check("purge time per partition minus the filesystem's share", (purge_ms - fs["free_ms"]) / max(dropped, 1),
              MS_PER_PARTITION, " ms"),
        Check("WAL per dropped partition", p["wal_bytes_per_partition"], MAX_WAL_PER_PARTITION, " B"),
        Check("max insert latency during the purge", ins["max_ms"] or 0.0, MAX_LATENCY_MS, " ms"),
        Check("failed inserts during the purge", ins["failed"], 0),
    ]
    return res
