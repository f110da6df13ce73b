"""anonymise: rewrite-and-swap of an expired partition against UPDATE in place.

One day of CDRs (5M rows at scale 1) is anonymised twice, with the same expressions (keyed
pseudonym of the caller, callee truncated to its country and area prefix):
* UPDATE in place on a plain copy of the rows, how static masking tools work;
* pgretention's rewrite-and-swap (``CALL pgretention.anon_run()``) on the partition.
Both tables carry indexes on time, caller and callee. Figures: wall time, WAL, size after, dead
tuples. Meanwhile one writer inserts into the current partition; its worst latency is reported.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from psycopg.types.json import Jsonb

from benchmarks.harness.meters import timed, wal_lsn, wal_since
from benchmarks.harness.results import Check, Result, fmt_bytes, fmt_ms, log, pyplot, ratio, save_figure
from benchmarks.harness.server import Context, checkpoint, connect, one, server_today
from benchmarks.harness.tables import CDR_COLUMNS, load
from pgretention.generator import plan_days

NAME = "anonymise"
ROWS = 5_000_000
DAYS_AGO = 35


def run(ctx: Context) -> Result:
    res = Result(NAME, "anonymise one partition: rewrite-and-swap vs UPDATE in place", ctx.scale)
    rows = max(int(ROWS * ctx.scale), 10_000)
    with ctx.database(NAME) as dsn:
        with connect(dsn) as conn:
            today = server_today(conn)
            conn.execute(
                "SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s, p_start => %s)",
                [CDR_COLUMNS, Jsonb({"all": {"anonymise_after": "30 days", "drop_after": "400 days"}}),
                 today - timedelta(days=DAYS_AGO + 2)],
            )
            for col in ("started_at", "caller", "callee"):
                conn.execute(f"CREATE INDEX ON cdr ({col})")  # noqa: S608 - fixed column names
            conn.execute("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'pseudonym')")
            conn.execute("SELECT pgretention.anon_rule_set('public.cdr', 'callee', 'e164_prefix', '4')")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        load(dsn, ["public.cdr"], plan_days(today, [(DAYS_AGO, rows)]), jobs=ctx.jobs)
        with connect(dsn) as conn:
            leaf = one(conn, "SELECT tableoid::regclass::text FROM cdr WHERE started_at < now() - interval '30 days' LIMIT 1")
            conn.execute(f"CREATE TABLE cdr_update AS SELECT * FROM {leaf}")  # noqa: S608 - catalog name
            for col in ("started_at", "caller", "callee"):
                conn.execute(f"CREATE INDEX ON cdr_update ({col})")  # noqa: S608 - fixed column names
            conn.execute("VACUUM ANALYZE cdr_update")
            conn.execute("VACUUM ANALYZE cdr")
            epoch = one(conn, "SELECT pgretention._anon_epoch(min(started_at)) FROM cdr_update")
            key = one(conn, "SELECT pgretention._epoch_key(%s)", [epoch])
            crypto = one(conn, "SELECT pgcrypto_schema FROM pgretention.installation")
            size_update_before = one(conn, "SELECT pg_total_relation_size('cdr_update')")
            size_leaf_before = one(conn, "SELECT pg_total_relation_size(%s::regclass)", [leaf])

            checkpoint(conn)
            lsn = wal_lsn(conn)
            update_ms, _ = timed(lambda: conn.execute(
                f"UPDATE cdr_update SET caller = 'p' || left(encode({crypto}.hmac(convert_to(caller, 'UTF8'), %s,"  # noqa: S608
                " 'sha256'), 'hex'), 24), callee = left(callee, 5)", [key]))
            update_wal = wal_since(conn, lsn)
            update_size = one(conn, "SELECT pg_total_relation_size('cdr_update')")
            update_dead = one(conn, "SELECT dead_tuple_count FROM pgstattuple('cdr_update')")

        latencies: list[tuple[float, float]] = []
        stop = threading.Event()

        def writer() -> None:
            with connect(dsn) as w:
                i = 0
                t0 = time.perf_counter()
                while not stop.is_set():
                    s = time.perf_counter()
                    w.execute("INSERT INTO cdr (id, started_at, caller, callee, duration)"
                              " VALUES (%s, now(), '+31600000000', '+31611111111', 1)", [-1 - i])
                    latencies.append((s - t0, (time.perf_counter() - s) * 1e3))
                    i += 1
                    time.sleep(0.005)

        th = threading.Thread(target=writer)
        with connect(dsn) as conn:
            checkpoint(conn)
            lsn = wal_lsn(conn)
            th.start()
            time.sleep(0.5)
            rewrite_ms, _ = timed(lambda: conn.execute("CALL pgretention.anon_run(p_table => 'public.cdr')"))
            time.sleep(0.5)
            stop.set()
            th.join()
            rewrite_wal = wal_since(conn, lsn)
            rewrite_size = one(conn, "SELECT pg_total_relation_size(%s::regclass)", [leaf])
            rewrite_dead = one(conn, "SELECT dead_tuple_count FROM pgstattuple(%s::regclass)", [leaf])
            same = one(conn, f"SELECT count(*) FROM {leaf} a JOIN cdr_update b USING (id)"  # noqa: S608
                             " WHERE a.caller = b.caller AND a.callee = b.callee")
        max_latency = max(lat for _, lat in latencies) if latencies else 0.0
        log(f"rewrite and UPDATE agree on {same:,} of {rows:,} rows")
        res.params.update(rows=f"{rows:,}", partition=leaf, identical_results=f"{same:,}")
        res.headers = ["method", "wall", "WAL", "size before", "size after", "dead tuples"]
        res.rows = [
            ["UPDATE in place", fmt_ms(update_ms), fmt_bytes(update_wal), fmt_bytes(size_update_before),
             fmt_bytes(update_size), f"{update_dead:,}"],
            ["pgretention rewrite-and-swap", fmt_ms(rewrite_ms), fmt_bytes(rewrite_wal), fmt_bytes(size_leaf_before),
             fmt_bytes(rewrite_size), f"{rewrite_dead:,}"],
        ]
        res.ratios = [f"speed: rewrite is {ratio(update_ms, rewrite_ms):.1f}x faster than UPDATE",
                      f"WAL: rewrite writes {ratio(rewrite_wal, update_wal):.2f}x the WAL of UPDATE",
                      f"insert latency into the current partition meanwhile: max {max_latency:.1f} ms"
                      f" over {len(latencies)} inserts"]
        res.figures.update(update_ms=update_ms, rewrite_ms=rewrite_ms, update_wal=update_wal, rewrite_wal=rewrite_wal,
                           update_size_after=update_size, rewrite_size_after=rewrite_size,
                           size_before=size_leaf_before, update_dead_tuples=update_dead,
                           rewrite_dead_tuples=rewrite_dead, max_insert_latency_ms=max_latency,
                           inserts=len(latencies))
        res.checks += [
            Check("rewrite speed-up over UPDATE", ratio(update_ms, rewrite_ms), 3.0, "x", at_least=True),
            Check("rewrite WAL / UPDATE WAL", ratio(rewrite_wal, update_wal), 0.5, "x"),
            Check("dead tuples after rewrite", float(rewrite_dead), 0.0),
            Check("size after / before", ratio(rewrite_size, size_leaf_before), 1.0, "x"),
            Check("max insert latency meanwhile", max_latency, 50.0, " ms"),
        ]
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot([t for t, _ in latencies], [lat for _, lat in latencies], linewidth=0.8)
        ax.axhline(50, color="red", linestyle="--", linewidth=1, label="target 50 ms")
        ax.set_xlabel("seconds")
        ax.set_ylabel("insert latency (ms)")
        ax.set_title(f"inserts into the current partition while {rows:,} rows are rewritten")
        ax.legend()
        res.plots.append(save_figure(fig, ctx.out, NAME))
    return res
