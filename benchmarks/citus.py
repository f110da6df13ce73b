"""citus: purge of 30 daily partitions of a distributed table against DELETE on the same data.

Opt-in (``--only citus``) and run against the Citus coordinator of ``PGRETENTION_CITUS_DSN`` (not
the throwaway cluster). Two distributed tables, distributed by subscriber, hold the same rows:
30 expired days plus 4 kept days, 10M rows in all at scale 1.

* DELETE + VACUUM: an unpartitioned distributed table; ``DELETE ... WHERE started_at < cutoff``
  (run on every shard in parallel by Citus), then ``VACUUM``.
* pgretention: daily partitions made by ``create_table(..., p_distribute_by => 'caller')``;
  ``CALL pgretention.run()`` detaches and drops the 30 expired ones.

Figures: wall time and WAL written on the workers (``run_command_on_workers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.harness.meters import timed
from benchmarks.harness.results import Check, Result, fmt_bytes, fmt_ms, log, pyplot, ratio, save_figure
from benchmarks.harness.server import Context, connect, one

NAME = "citus"
EXPIRED_DAYS = 30
KEPT_DAYS = 4
DROP_AFTER_DAYS = 10
ROWS = 10_000_000  # at scale 1, both tables
T_DELETE = "bench_citus_delete"
T_PGRET = "bench_citus_pgret"
COLUMNS = "id bigint NOT NULL, started_at timestamptz NOT NULL, caller text NOT NULL, callee text, duration int"
MIN_SPEEDUP = 10.0


def run(ctx: Context) -> Result:
    dsn = os.environ.get("PGRETENTION_CITUS_DSN")
    if not dsn:
        raise RuntimeError("the citus benchmark needs PGRETENTION_CITUS_DSN (a Citus coordinator with workers)")
    res = Result(NAME, "distributed table: pgretention run() vs DELETE + VACUUM on the same data", ctx.scale)
    days = EXPIRED_DAYS + KEPT_DAYS
    rows_per_day = max(1000, round(ROWS * ctx.scale / days))
    res.params = {
        "data": f"{days} days x {rows_per_day:,} rows = {days * rows_per_day:,} rows per table; "
        f"{EXPIRED_DAYS} days ({EXPIRED_DAYS * rows_per_day:,} rows) past drop_after {DROP_AFTER_DAYS} days",
        "distribution": "by caller (subscriber), citus.shard_count 4 per table",
        "indexes": "started_at, caller",
    }
    subprocess.run([sys.executable, "-m", "pgretention", "--dsn", dsn, "install"], check=True,
                   capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    with connect(dsn) as conn:
        version = one(conn, "SELECT citus_version()").split(" on ")[0]
        workers = one(conn, "SELECT count(*) FROM citus_get_active_worker_nodes()")
        res.params["cluster"] = f"{version}, {workers} workers"
        _drop(conn)
        conn.execute("SET citus.shard_count = 4")
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(T_DELETE), sql.SQL(COLUMNS)))
        conn.execute("SELECT create_distributed_table(%s, 'caller')", [T_DELETE])
        conn.execute("SELECT pgretention.table_create(%s, %s, 'started_at', '1 day', %s,"
                     " p_start => date_trunc('day', now()) - make_interval(days => %s), p_distribute_by => 'caller')",
                     [f"public.{T_PGRET}", COLUMNS, Jsonb({"all": {"drop_after": f"{DROP_AFTER_DAYS} days"}}),
                      days + DROP_AFTER_DAYS - KEPT_DAYS])
        for table in (T_DELETE, T_PGRET):
            log(f"citus: loading {table}")
            for d in range(days):
                offset = d if d < EXPIRED_DAYS else EXPIRED_DAYS + DROP_AFTER_DAYS - KEPT_DAYS + (d - EXPIRED_DAYS)
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT g, date_trunc('day', now()) - make_interval(days => %s)"
                            " + make_interval(days => %s) + (g %% %s) * make_interval(secs => 86400.0 / %s),"
                            " '+3161' || (g %% 200000), '+3162' || g, g %% 600 FROM generate_series(%s, %s) g")
                    .format(sql.Identifier(table)),
                    [EXPIRED_DAYS + DROP_AFTER_DAYS, offset, rows_per_day, rows_per_day, d * rows_per_day,
                     (d + 1) * rows_per_day - 1])
            conn.execute(sql.SQL("CREATE INDEX ON {} (started_at)").format(sql.Identifier(table)))
            conn.execute(sql.SQL("CREATE INDEX ON {} (caller)").format(sql.Identifier(table)))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        cutoff = one(conn, "SELECT date_trunc('day', now()) - make_interval(days => %s)", [DROP_AFTER_DAYS])
        expired = one(conn, sql.SQL("SELECT count(*) FROM {} WHERE started_at < %s").format(sql.Identifier(T_PGRET)),
                      [cutoff])
        total = one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(T_DELETE)))
        assert expired == EXPIRED_DAYS * rows_per_day, expired
        conn.execute("CHECKPOINT")

        lsn = _worker_lsns(conn)
        delete_ms, deleted = timed(lambda: conn.execute(
            sql.SQL("DELETE FROM {} WHERE started_at < %s").format(sql.Identifier(T_DELETE)), [cutoff]).rowcount)
        vacuum_ms, _ = timed(conn.execute, sql.SQL("VACUUM {}").format(sql.Identifier(T_DELETE)))
        delete_wal = _worker_wal_since(conn, lsn)
        log(f"citus: DELETE {fmt_ms(delete_ms)} + VACUUM {fmt_ms(vacuum_ms)}, {deleted:,} rows")

        lsn = _worker_lsns(conn)
        run_ms, _ = timed(conn.execute, "CALL pgretention.run(p_runner => 'bench')")
        pgret_wal = _worker_wal_since(conn, lsn)
        summary = one(conn, "SELECT summary FROM pgretention.job_run ORDER BY id DESC LIMIT 1")
        dropped = summary["totals"]["partitions_dropped"]
        log(f"citus: pgretention run {fmt_ms(run_ms)}, {dropped} partitions dropped")
        left_delete = one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(T_DELETE)))
        left_pgret = one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(T_PGRET)))
        assert left_delete == left_pgret == total - expired, (left_delete, left_pgret, total, expired)
        _drop(conn)

    dv_ms = delete_ms + vacuum_ms
    speedup = ratio(dv_ms, run_ms)
    res.figures = {
        "rows_per_table": total, "expired_rows": expired, "partitions_dropped": dropped,
        "delete_vacuum": {"ms": dv_ms, "delete_ms": delete_ms, "vacuum_ms": vacuum_ms, "rows_deleted": deleted,
                          "worker_wal_bytes": delete_wal},
        "pgretention": {"ms": run_ms, "worker_wal_bytes": pgret_wal, "ms_per_partition": run_ms / max(dropped, 1)},
        "ratios": {"delete_vacuum_over_pgretention_time": speedup,
                   "delete_vacuum_over_pgretention_wal": ratio(delete_wal, pgret_wal)},
    }
    res.headers = ["method", "time", "WAL on workers", "removed"]
    res.rows = [
        ["DELETE + VACUUM", f"{fmt_ms(dv_ms)} ({fmt_ms(delete_ms)} + {fmt_ms(vacuum_ms)})", fmt_bytes(delete_wal),
         f"{deleted:,} rows"],
        ["pgretention run()", fmt_ms(run_ms), fmt_bytes(pgret_wal), f"{dropped} partitions ({expired:,} rows)"],
    ]
    res.ratios = [
        f"time: DELETE + VACUUM / pgretention = {speedup:,.1f}x; per dropped partition "
        f"{fmt_ms(run_ms / max(dropped, 1))}",
        f"WAL on the workers: DELETE + VACUUM / pgretention = {ratio(delete_wal, pgret_wal):,.0f}x",
    ]
    res.checks = [
        Check("partitions dropped", dropped, EXPIRED_DAYS, at_least=True),
        Check("DELETE + VACUUM / pgretention time", speedup, MIN_SPEEDUP, "x", at_least=True),
    ]
    with connect(dsn) as conn:
        settings = {k: one(conn, "SELECT current_setting(%s)", [k]) for k in ("fsync", "full_page_writes",
                                                                            "synchronous_commit")}
    res.params["durability (coordinator)"] = ", ".join(f"{k}={v}" for k, v in settings.items())
    res.notes.append("the Citus nodes are not the benchmark harness's own server: the CPU meter counts their "
                     "processes as other processes")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(["pgretention run()", "DELETE + VACUUM"], [run_ms / 1000, dv_ms / 1000], color=["#2a7", "#c44"])
    ax.set_xlabel("seconds")
    ax.set_title(f"Citus: removing {expired:,} expired rows ({EXPIRED_DAYS} daily partitions)")
    res.plots.append(save_figure(fig, ctx.out, NAME))
    return res


def _drop(conn: Any) -> None:
    conn.execute("SELECT pgretention.table_release(format('%%I.%%I', table_schema, table_name))"
                 " FROM pgretention.managed_table WHERE table_name = %s", [T_PGRET])
    for schema, name in conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                                     " ON n.oid = c.relnamespace WHERE c.relname ~ '^bench_citus_'"
                                     " AND c.relkind IN ('r', 'p') AND NOT c.relispartition").fetchall():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(sql.Identifier(schema), sql.Identifier(name)))


def _worker_lsns(conn: Any) -> dict[str, str]:
    rows = conn.execute("SELECT nodename || ':' || nodeport, result FROM"
                        " run_command_on_workers('SELECT pg_current_wal_lsn()')").fetchall()
    return {k: v for k, v in rows}


def _worker_wal_since(conn: Any, before: dict[str, str]) -> int:
    total = 0
    for node, lsn in before.items():
        rows = conn.execute("SELECT result FROM run_command_on_workers(format("
                            "'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %%L)', %s::text))"
                            " WHERE nodename || ':' || nodeport = %s", [lsn, node]).fetchall()
        total += int(float(rows[0][0]))
    return total
