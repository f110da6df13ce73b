"""purge: removing 20 days of expired CDRs (10M rows at scale 1) three ways, on identical data.

* DELETE + VACUUM: the same rows in an unpartitioned table (how retention is done without
  partitions): one ``DELETE ... WHERE started_at < cutoff``, then a plain ``VACUUM``.
* pg_partman: daily partitions, pg_partman's own retention (``run_maintenance``).
* pgretention: daily partitions, ``CALL pgretention.run()``.

Each table has indexes on time, caller and callee. Before each method the server is checkpointed
and restarted (cold shared buffers), so every method starts from the same state. Figures: wall
time, WAL written, size after. The filesystem's own cost of freeing the bytes pgretention drops is
measured with a plain file of the same size on the same filesystem.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql

from benchmarks.harness.meters import (
    MB,
    fs_free_cost,
    fs_free_cost_files,
    relation_files,
    timed,
    total_size,
    wal_lsn,
    wal_since,
)
from benchmarks.harness.results import Check, Result, fmt_bytes, fmt_ms, log, pyplot, ratio, save_figure
from benchmarks.harness.server import Context, checkpoint, connect, server_today
from benchmarks.harness.tables import (
    DROP_AFTER_DAYS,
    add_indexes,
    create_partman_table,
    create_pgretention_table,
    create_plain_table,
    load,
    partman_schema,
    qualified,
    settle,
    time_partitions,
)
from pgretention.generator import plan_days

NAME = "purge"
EXPIRED_DAYS = 20
KEPT_DAYS = 4
ROWS_PER_DAY = 500_000  # at scale 1: 20 x 500k = 10M expired rows

T_DELETE = "public.cdr_delete"
T_PARTMAN = "public.cdr_partman"
T_PGRET = "public.cdr_pgret"

# targets
MIN_SPEEDUP = 10.0
MAX_WAL_PER_PARTITION = 1 * MB
MS_PER_PARTITION = 5.0


def run(ctx: Context) -> Result:
    rows_per_day = max(1000, round(ROWS_PER_DAY * ctx.scale))
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn, rows_per_day)


def _cold(ctx: Context, dsn: str) -> None:
    with connect(dsn) as conn:
        checkpoint(conn)
    ctx.server.restart()


def _run(ctx: Context, dsn: str, rows_per_day: int) -> Result:
    res = Result(
        NAME, "remove expired rows: DELETE + VACUUM vs pg_partman retention vs pgretention run()", ctx.scale
    )
    expired_rows = EXPIRED_DAYS * rows_per_day
    res.params = {
        "data": f"{EXPIRED_DAYS} expired days x {rows_per_day:,} rows = {expired_rows:,} expired rows, "
        f"plus {KEPT_DAYS} kept days ({KEPT_DAYS * rows_per_day:,} rows)",
        "indexes": "started_at, caller, callee",
        "retention": f"drop_after {DROP_AFTER_DAYS} days; daily partitions",
        "state before each method": "CHECKPOINT, then server restarted (cold)"
        if ctx.server.can_restart
        else "CHECKPOINT (existing server: not restarted, caches warm)",
    }

    with connect(dsn) as conn:
        today = server_today(conn)
        start = today - timedelta(days=DROP_AFTER_DAYS + EXPIRED_DAYS)
        spec = [(DROP_AFTER_DAYS + EXPIRED_DAYS - k, rows_per_day) for k in range(EXPIRED_DAYS)]
        spec += [(KEPT_DAYS - k, rows_per_day) for k in range(KEPT_DAYS)]
        days = plan_days(today, spec)
        cutoff = today - timedelta(days=DROP_AFTER_DAYS)
        log(f"purge: creating 3 tables, {len(days)} days x {rows_per_day:,} rows each")
        create_plain_table(conn, T_DELETE)
        create_partman_table(conn, T_PARTMAN, start)
        create_pgretention_table(conn, T_PGRET, start)
    load(dsn, [T_DELETE, T_PARTMAN, T_PGRET], days, jobs=ctx.jobs)
    with connect(dsn) as conn:
        for table in (T_DELETE, T_PARTMAN, T_PGRET):
            add_indexes(conn, table)
            settle(conn, table)
        log("purge: indexes built, tables vacuumed and analyzed")

    figures: dict[str, Any] = {}
    figures["delete_vacuum"] = _delete_vacuum(ctx, dsn, cutoff)
    figures["pg_partman"] = _partman(ctx, dsn)
    figures["pgretention"] = _pgretention(ctx, dsn)
    pgr = figures["pgretention"]
    fs = fs_free_cost(ctx.fs_dir, pgr["bytes_dropped"])
    figures["filesystem"] = fs
    fs_files = fs_free_cost_files(ctx.fs_dir, pgr.pop("file_sizes"))
    figures["filesystem_same_files"] = fs_files
    log(
        f"purge: filesystem frees {fmt_bytes(fs['bytes'])} in {fmt_ms(fs['free_ms'])} as one file, "
        f"in {fmt_ms(fs_files['free_ms'])} as the same {fs_files['files']:.0f} files"
    )

    dv, pm = figures["delete_vacuum"], figures["pg_partman"]
    res.headers = ["method", "time", "WAL", "size before", "size after", "removed"]
    res.rows = [
        [
            "DELETE + VACUUM",
            f"{fmt_ms(dv['ms'])} ({fmt_ms(dv['delete_ms'])} + {fmt_ms(dv['vacuum_ms'])})",
            fmt_bytes(dv["wal_bytes"]),
            fmt_bytes(dv["size_before"]),
            fmt_bytes(dv["size_after"]),
            f"{dv['rows_deleted']:,} rows",
        ],
        [
            "pg_partman run_maintenance",
            fmt_ms(pm["ms"]),
            fmt_bytes(pm["wal_bytes"]),
            fmt_bytes(pm["size_before"]),
            fmt_bytes(pm["size_after"]),
            f"{pm['partitions_dropped']} partitions",
        ],
        [
            "pgretention run()",
            fmt_ms(pgr["ms"]),
            fmt_bytes(pgr["wal_bytes"]),
            fmt_bytes(pgr["size_before"]),
            fmt_bytes(pgr["size_after"]),
            f"{pgr['partitions_dropped']} partitions",
        ],
        ["filesystem: free same bytes", fmt_ms(fs["free_ms"]), "-", fmt_bytes(fs["bytes"]), "-", "1 file"],
        [
            "filesystem: free same files",
            fmt_ms(fs_files["free_ms"]),
            "-",
            fmt_bytes(fs_files["bytes"]),
            "-",
            f"{fs_files['files']:.0f} files",
        ],
    ]
    dropped = max(pgr["partitions_dropped"], 1)
    speedup = ratio(dv["ms"], pgr["ms"])
    figures["ratios"] = {
        "delete_vacuum_over_pgretention_time": speedup,
        "pg_partman_over_pgretention_time": ratio(pm["ms"], pgr["ms"]),
        "delete_vacuum_over_pgretention_wal": ratio(dv["wal_bytes"], pgr["wal_bytes"]),
        "pgretention_wal_per_partition": pgr["wal_bytes"] / dropped,
        "pgretention_ms_per_partition": pgr["ms"] / dropped,
    }
    res.ratios = [
        f"time: DELETE + VACUUM / pgretention = {speedup:,.1f}x; pg_partman / pgretention = "
        f"{ratio(pm['ms'], pgr['ms']):.2f}x",
        f"WAL: DELETE + VACUUM / pgretention = {ratio(dv['wal_bytes'], pgr['wal_bytes']):,.0f}x; "
        f"pgretention per dropped partition = {fmt_bytes(pgr['wal_bytes'] / dropped)}",
        f"pgretention per partition: {fmt_ms(pgr['ms'] / dropped)}; filesystem share of its time: "
        f"{100 * fs['free_ms'] / max(pgr['ms'], 1e-9):.0f}%",
    ]
    budget = fs["free_ms"] + MS_PER_PARTITION * pgr["partitions_dropped"]
    pm_budget = fs["free_ms"] + MS_PER_PARTITION * pm["partitions_dropped"]
    files_budget = fs_files["free_ms"] + MS_PER_PARTITION * pgr["partitions_dropped"]
    figures["budgets_ms"] = {
        "pgretention": budget,
        "pg_partman": pm_budget,
        "pgretention_same_files": files_budget,
    }
    over_partman = (pgr["ms"] - pm["ms"]) / dropped
    figures["ratios"]["pgretention_minus_pg_partman_ms_per_partition"] = over_partman
    res.ratios += [
        f"pgretention's own cost over pg_partman's drops: {fmt_ms(over_partman)} per partition "
        "(two transactions, audit record)",
        f"the same time budget applied to pg_partman: {fmt_ms(pm['ms'])} against {fmt_ms(pm_budget)}",
        f"pgretention against the same files freed + {MS_PER_PARTITION:g} ms per partition: "
        f"{fmt_ms(pgr['ms'])} against {fmt_ms(files_budget)}",
    ]
    res.checks = [
        Check("pgretention speed-up over DELETE + VACUUM", speedup, MIN_SPEEDUP, "x", at_least=True),
        Check(
            "pgretention WAL per dropped partition",
            pgr["wal_bytes"] / dropped / MB,
            MAX_WAL_PER_PARTITION / MB,
            " MB",
        ),
        Check(
            f"pgretention time vs filesystem cost + {MS_PER_PARTITION:g} ms"
            f" x {pgr['partitions_dropped']} partitions",
            pgr["ms"],
            budget,
            " ms",
        ),
    ]
    if pgr["partitions_dropped"] != EXPIRED_DAYS or pm["partitions_dropped"] != EXPIRED_DAYS:
        res.notes.append(
            f"expected {EXPIRED_DAYS} dropped partitions per method, got pgretention "
            f"{pgr['partitions_dropped']}, pg_partman {pm['partitions_dropped']}"
        )
    if dv["rows_deleted"] != expired_rows:
        res.notes.append(f"DELETE removed {dv['rows_deleted']:,} rows, expected {expired_rows:,}")
    res.notes.append(
        "DELETE + VACUUM leaves the table's files at their size (the space is reusable, not "
        "returned); partition drops return it to the filesystem"
    )
    res.figures = figures
    res.plots.append(_plot(figures, ctx.out, ctx.scale, expired_rows))
    return res


def _delete_vacuum(ctx: Context, dsn: str, cutoff: datetime) -> dict[str, Any]:
    _cold(ctx, dsn)
    with connect(dsn) as conn:
        size_before = total_size(conn, T_DELETE)
        lsn = wal_lsn(conn)
        log("purge: DELETE of the expired rows ...")
        delete_ms, cur = timed(
            lambda: conn.execute(
                sql.SQL("DELETE FROM {} WHERE started_at < %s").format(qualified(T_DELETE)), [cutoff]
            )
        )
        deleted = cur.rowcount
        log(f"purge: DELETE {deleted:,} rows took {fmt_ms(delete_ms)}; VACUUM ...")
        vacuum_ms, _ = timed(lambda: conn.execute(sql.SQL("VACUUM {}").format(qualified(T_DELETE))))
        wal = wal_since(conn, lsn)
        out = {
            "ms": delete_ms + vacuum_ms,
            "delete_ms": delete_ms,
            "vacuum_ms": vacuum_ms,
            "wal_bytes": wal,
            "size_before": size_before,
            "size_after": total_size(conn, T_DELETE),
            "rows_deleted": deleted,
        }
    log(f"purge: DELETE + VACUUM {fmt_ms(out['ms'])}, WAL {fmt_bytes(wal)}")
    return out


def _partman(ctx: Context, dsn: str) -> dict[str, Any]:
    with connect(dsn) as conn:
        before = len(time_partitions(conn, T_PARTMAN))
    _cold(ctx, dsn)
    with connect(dsn) as conn:
        schema = sql.Identifier(partman_schema(conn))
        size_before = total_size(conn, T_PARTMAN)
        lsn = wal_lsn(conn)
        log("purge: pg_partman run_maintenance ...")
        ms, _ = timed(
            lambda: conn.execute(
                sql.SQL("SELECT {}.run_maintenance(p_parent_table := %s, p_jobmon := false)").format(schema),
                [T_PARTMAN],
            )
        )
        wal = wal_since(conn, lsn)
        after = len(time_partitions(conn, T_PARTMAN))
        out = {
            "ms": ms,
            "wal_bytes": wal,
            "size_before": size_before,
            "size_after": total_size(conn, T_PARTMAN),
            "partitions_dropped": before - after,
        }
    log(f"purge: pg_partman {fmt_ms(ms)}, {before - after} partitions, WAL {fmt_bytes(wal)}")
    return out


def _pgretention(ctx: Context, dsn: str) -> dict[str, Any]:
    with connect(dsn) as conn:
        planned = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), array_agg(partition) FROM pgretention.plan(now(), %s)",
            [T_PGRET],
        ).fetchone()
        assert planned is not None
        files = relation_files(conn, planned[2] or [])
        before = len(time_partitions(conn, T_PGRET))
    _cold(ctx, dsn)
    with connect(dsn) as conn:
        size_before = total_size(conn, T_PGRET)
        lsn = wal_lsn(conn)
        log(f"purge: pgretention run() ({planned[0]} partitions planned) ...")
        ms, _ = timed(
            lambda: conn.execute(
                "CALL pgretention.run(p_now => now(), p_table => %s, p_runner => 'bench')", [T_PGRET]
            )
        )
        wal = wal_since(conn, lsn)
        after = len(time_partitions(conn, T_PGRET))
        last_run = conn.execute(
            "SELECT id, summary FROM pgretention.job_run WHERE runner = 'bench' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        run_id, summary = last_run if last_run is not None else (None, None)
        # per partition, from the engine's own records: detach committed -> partition dropped
        per_op = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM done_at - detached_at) * 1000),"
            " max(extract(epoch FROM done_at - detached_at) * 1000)"
            " FROM pgretention.partition_op WHERE run_id = %s AND state = 'done'",
            [run_id],
        ).fetchone()
        out = {
            "ms": ms,
            "wal_bytes": wal,
            "size_before": size_before,
            "size_after": total_size(conn, T_PGRET),
            "partitions_dropped": before - after,
            "partitions_planned": int(planned[0]),
            "bytes_dropped": int(planned[1]),
            "file_sizes": files,
            "run_summary": summary,
            "detached_to_dropped_median_ms": per_op[0] if per_op else None,
            "detached_to_dropped_max_ms": per_op[1] if per_op else None,
        }
    log(f"purge: pgretention {fmt_ms(ms)}, {before - after} partitions, WAL {fmt_bytes(wal)}")
    return out


def _plot(figures: dict[str, Any], out: Path, scale: float, expired_rows: int) -> str:
    plt = pyplot()
    labels = ["DELETE +\nVACUUM", "pg_partman", "pgretention"]
    keys = ["delete_vacuum", "pg_partman", "pgretention"]
    colors = ["#b0413e", "#6c8ebf", "#3a7d44"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    panels = [
        ("wall time (s)", [figures[k]["ms"] / 1000 for k in keys], True),
        ("WAL written (MB)", [max(figures[k]["wal_bytes"], 1) / MB for k in keys], True),
        ("size after (MB)", [figures[k]["size_after"] / MB for k in keys], False),
    ]
    for ax, (title, values, logy) in zip(axes, panels, strict=True):
        bars = ax.bar(labels, values, color=colors)
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                f"{v:,.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=9
            )
    fs_s = figures["filesystem"]["free_ms"] / 1000
    axes[0].axhline(fs_s, color="grey", linestyle="--", linewidth=1)
    axes[0].annotate(
        "filesystem: free the same bytes",
        (0.98, fs_s),
        xycoords=("axes fraction", "data"),
        fontsize=8,
        color="grey",
        va="bottom",
        ha="right",
    )
    fig.suptitle(f"purge of {expired_rows:,} expired rows (scale {scale:g})")
    return save_figure(fig, out, NAME)
