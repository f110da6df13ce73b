"""size: what dropping one expired partition costs, against the partition's size, partitions cold.

One pgretention table holds expired daily partitions of 100k, 1M and 10M rows at scale 1 (three
of each of the two smaller sizes, one of the largest), with indexes on time, caller and callee.
Before each partition's purge the server is checkpointed and restarted, so its shared buffers and
the backend's caches are cold. The partition is then purged the way ``pgretention.run()`` does it,
one step per transaction, and each transaction is timed from the client:

* parent lock time: ``pgretention._detach_leaf`` (DETACH PARTITION under the engine's lock_timeout,
  the operation record, COMMIT): the ACCESS EXCLUSIVE lock on the parent is held at most this long;
* drop: ``pgretention._finish_op`` (DROP TABLE of the detached partition, audit, COMMIT);
* whole drop: both.

The new backend first makes one no-op call of each function (a relation that is not a partition),
so that compiling the PL/pgSQL code is not counted (the table's data stays cold); a second no-op
call times the leaf lookup that runs before the DETACH asks for the lock. The filesystem's
own cost of freeing the same number of bytes is measured with a plain file next to the data.
"""

from __future__ import annotations

import statistics
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness.meters import fs_free_cost, fs_free_cost_files, relation_files, timed
from benchmarks.harness.results import Check, Result, fmt_bytes, fmt_ms, log, pyplot, ratio, save_figure
from benchmarks.harness.server import Context, checkpoint, connect, one, server_today
from benchmarks.harness.tables import (
    DROP_AFTER_DAYS,
    add_indexes,
    create_pgretention_table,
    load,
    settle,
    time_partitions,
)
from pgretention.generator import plan_days

NAME = "size"
SIZES = (100_000, 1_000_000, 10_000_000)  # rows per partition at scale 1
REPEATS = (3, 3, 1)
TABLE = "public.cdr_size"

MAX_LOCK_RATIO = 2.0
WHOLE_DROP_SLACK_MS = 50.0


def run(ctx: Context) -> Result:
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn)


def _run(ctx: Context, dsn: str) -> Result:
    sizes = [max(1000, round(s * ctx.scale)) for s in SIZES]
    res = Result(NAME, "cost of dropping one cold partition against its size", ctx.scale)
    res.params = {
        "partitions": ", ".join(f"{n} x {s:,} rows" for s, n in zip(sizes, REPEATS, strict=True)),
        "indexes": "started_at, caller, callee",
        "cold": "CHECKPOINT and server restart before each partition"
        if ctx.server.can_restart
        else "existing server: not restarted (warm caches)",
    }
    # Measurement order interleaves the sizes; partitions are consecutive expired days.
    order: list[int] = []
    for rep in range(max(REPEATS)):
        order += [i for i, n in enumerate(REPEATS) if rep < n]
    with connect(dsn) as conn:
        today = server_today(conn)
        first_ago = DROP_AFTER_DAYS + len(order) + 1
        spec = [(first_ago - k, sizes[size_index]) for k, size_index in enumerate(order)]
        days = plan_days(today, spec)
        create_pgretention_table(conn, TABLE, today - timedelta(days=first_ago))
        table_id = int(one(conn, "SELECT (pgretention._managed(%s)).id", [TABLE]))
    log(f"size: loading {sum(d.rows for d in days):,} rows in {len(days)} partitions")
    load(dsn, [TABLE], days, jobs=ctx.jobs)
    with connect(dsn) as conn:
        add_indexes(conn, TABLE)
        settle(conn, TABLE)
        parts = {
            lower: (name, size, relation_files(conn, [name]))
            for name, lower, size in time_partitions(conn, TABLE)
        }
        expired = {r[0] for r in conn.execute("SELECT partition FROM pgretention.plan(now(), %s)", [TABLE])}

    samples: list[dict[str, Any]] = []
    for day in days:
        leaf, nbytes, files = parts[day.start]
        if leaf not in expired:
            raise RuntimeError(f"partition {leaf} is not expired according to pgretention.plan")
        with connect(dsn) as conn:
            checkpoint(conn)
        ctx.server.restart()
        with connect(dsn) as conn:
            # warm the backend's function cache without touching the table (not a partition: no-op);
            # the second no-op call times the leaf lookup that precedes the DETACH (no lock held yet)
            noop = "SELECT pgretention._detach_leaf(%s, 'default', 'pg_class'::regclass, now(), NULL, 1)"
            conn.execute(noop, [table_id])
            conn.execute("SELECT pgretention._finish_op(-1)")
            lookup_ms, _ = timed(one, conn, noop, [table_id])
            op = None
            attempts = 0
            while op is None and attempts < 100:
                attempts += 1
                lock_ms, op = timed(
                    one,
                    conn,
                    "SELECT pgretention._detach_leaf(%s, 'default', %s::regclass, now(), NULL, %s)",
                    [table_id, leaf, attempts],
                )
            if not op:
                raise RuntimeError(f"could not detach {leaf}")
            drop_ms, ok = timed(one, conn, "SELECT pgretention._finish_op(%s)", [op])
            if not ok:
                raise RuntimeError(f"could not drop detached partition {leaf}")
            # newer engine versions count the rows of small detached partitions for the audit record
            counted = one(
                conn,
                "SELECT details ->> 'rows_counted' FROM pgretention.audit_log"
                " WHERE action = 'partition.drop' AND details ->> 'partition' = %s"
                " ORDER BY id DESC LIMIT 1",
                [leaf.split(".", 1)[-1]],
            )
        fs = fs_free_cost(ctx.fs_dir, nbytes)
        fs_files = fs_free_cost_files(ctx.fs_dir, files)
        sample = {
            "rows": day.rows,
            "bytes": nbytes,
            "lock_ms": lock_ms,
            "drop_ms": drop_ms,
            "whole_ms": lock_ms + drop_ms,
            "lookup_ms": lookup_ms,
            "fs_free_ms": fs["free_ms"],
            "fs_files_free_ms": fs_files["free_ms"],
            "files": len(files),
            "lock_attempts": attempts,
            "rows_counted_before_drop": counted == "true",
        }
        samples.append(sample)
        log(
            f"size: {day.rows:,} rows ({fmt_bytes(nbytes)}): lock {fmt_ms(lock_ms)}, drop {fmt_ms(drop_ms)}, "
            f"filesystem {fmt_ms(fs['free_ms'])} (same files: {fmt_ms(fs_files['free_ms'])})"
        )

    per_size: list[dict[str, Any]] = []
    for rows in sizes:
        group = [s for s in samples if s["rows"] == rows]
        per_size.append(
            {
                "rows": rows,
                "samples": len(group),
                "bytes": int(statistics.median(s["bytes"] for s in group)),
                **{
                    k: statistics.median(s[k] for s in group)
                    for k in (
                        "lock_ms",
                        "lookup_ms",
                        "drop_ms",
                        "whole_ms",
                        "fs_free_ms",
                        "fs_files_free_ms",
                        "files",
                    )
                },
            }
        )
    res.figures = {"per_size": per_size, "samples": samples}
    res.headers = [
        "rows per partition",
        "bytes",
        "parent lock",
        "(lookup before lock)",
        "drop",
        "whole drop",
        "filesystem free",
        "whole - filesystem",
        "filesystem, same files",
    ]
    res.rows = [
        [
            f"{p['rows']:,}",
            fmt_bytes(p["bytes"]),
            fmt_ms(p["lock_ms"]),
            fmt_ms(p["lookup_ms"]),
            fmt_ms(p["drop_ms"]),
            fmt_ms(p["whole_ms"]),
            fmt_ms(p["fs_free_ms"]),
            fmt_ms(p["whole_ms"] - p["fs_free_ms"]),
            f"{fmt_ms(p['fs_files_free_ms'])} ({p['files']:.0f} files)",
        ]
        for p in per_size
    ]
    small, large = per_size[0], per_size[-1]
    lock_ratio = ratio(large["lock_ms"], small["lock_ms"])
    res.figures["lock_ratio_largest_smallest"] = lock_ratio
    res.ratios = [
        f"parent lock time, largest / smallest partition: {lock_ratio:.2f}x "
        f"({large['rows']:,} vs {small['rows']:,} rows;"
        f" {ratio(large['bytes'], small['bytes']):,.0f}x the bytes)",
        "medians over " + ", ".join(f"{p['samples']}" for p in per_size) + " partitions",
        "parent lock = the whole detach transaction, an upper bound of the time the lock is held:"
        " it includes "
        "the leaf lookup that runs before the DETACH asks for the lock (timed separately)",
    ]
    res.checks = [
        Check(f"parent lock time {large['rows']:,} / {small['rows']:,} rows", lock_ratio, MAX_LOCK_RATIO, "x")
    ]
    for p in per_size:
        res.checks.append(
            Check(
                f"whole drop of {p['rows']:,} rows vs filesystem + {WHOLE_DROP_SLACK_MS:g} ms",
                p["whole_ms"],
                p["fs_free_ms"] + WHOLE_DROP_SLACK_MS,
                " ms",
            )
        )
    counted_sizes = sorted({s["rows"] for s in samples if s["rows_counted_before_drop"]})
    if counted_sizes:
        res.notes.append(
            "the drop step includes pgretention's count(*) of the detached partition (exact row count "
            "for the audit record) for partitions of "
            + ", ".join(f"{r:,}" for r in counted_sizes)
            + " rows; its cost grows with the partition's size"
        )
    res.plots.append(_plot(per_size, samples, ctx.out, ctx.scale))
    return res


def _plot(per_size: list[dict[str, Any]], samples: list[dict[str, Any]], out: Path, scale: float) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    rows = [p["rows"] for p in per_size]
    series = [
        ("whole drop (detach + drop)", "whole_ms", "#3a7d44", "o-"),
        ("parent lock (detach transaction)", "lock_ms", "#6c8ebf", "s-"),
        ("drop transaction", "drop_ms", "#e0a030", "^-"),
        ("filesystem: free same bytes", "fs_free_ms", "grey", "x--"),
        ("filesystem: free same files", "fs_files_free_ms", "#999999", "+:"),
    ]
    for label, key, color, style in series:
        ax.plot(rows, [p[key] for p in per_size], style, color=color, label=label)
        ax.scatter([s["rows"] for s in samples], [s[key] for s in samples], color=color, s=10, alpha=0.4)
    ax.plot(
        rows,
        [p["fs_free_ms"] + WHOLE_DROP_SLACK_MS for p in per_size],
        ":",
        color="#b0413e",
        label=f"target: filesystem + {WHOLE_DROP_SLACK_MS:g} ms",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in the partition")
    ax.set_ylabel("ms")
    ax.set_title(f"dropping one cold partition (scale {scale:g})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, NAME)
