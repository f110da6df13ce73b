"""subjects: data-subject requests and legal holds at volume.

1. A CDR table of 400 daily partitions (10M rows at scale 1) with one subject who appears ~1,000
   times, as caller in some rows and callee in others. Export (every row about the subject, through
   ``pgretention.subject_rows``) and erasure (``pgretention._erase_subject``, rolled back so both
   variants see the same data) are timed first without and then with the indexes pgretention
   creates (``subject_index_ddl``: per partition, CONCURRENTLY). Target: each <= 100 ms with them.
2. Two identical tables with 30 expired daily partitions; 1,000 subjects of the second are under a
   legal hold. ``pgretention.run()`` purges both. Target: the purge with holds takes <= 2x the one
   without, and every held row is preserved in the hold store.
"""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.harness.meters import timed
from benchmarks.harness.results import Check, Result, fmt_ms, log, pyplot, ratio, save_figure
from benchmarks.harness.server import Context, connect, one, server_today
from benchmarks.harness.tables import CDR_COLUMNS, load, qualified
from pgretention.generator import plan_days

NAME = "subjects"
DAYS = 400
ROWS = 10_000_000
SUBJECT = "+31699999999"
SUBJECT_ROWS = 1_000
HOLD_SUBJECTS = 1_000
PURGE_DAYS = 30


def _median_ms(fn: Any, repeat: int = 5) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def run(ctx: Context) -> Result:
    res = Result(NAME, "subject export and erasure; purge with legal holds", ctx.scale)
    with ctx.database(NAME) as dsn:
        _requests(ctx, dsn, res)
        _holds(ctx, dsn, res)
    return res


def _requests(ctx: Context, dsn: str, res: Result) -> None:
    rows = max(int(ROWS * ctx.scale), DAYS * 100)
    with connect(dsn) as conn:
        today = server_today(conn)
        conn.execute(
            "SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s, p_start => %s, p_premake => 2)",
            [CDR_COLUMNS, Jsonb({"default": {"drop_after": "500 days"}}), today - timedelta(days=DAYS)],
        )
    load(
        dsn, ["public.cdr"], plan_days(today, [(d, rows // DAYS) for d in range(1, DAYS + 1)]), jobs=ctx.jobs
    )
    with connect(dsn) as conn:
        # the subject: ~1,000 calls over the whole period, half as caller, half as callee
        conn.execute(
            "INSERT INTO cdr (id, started_at, caller, callee, duration)"
            " SELECT -g, %s::timestamptz - (g * 0.397) * interval '1 day',"
            " CASE WHEN g %% 2 = 0 THEN %s ELSE '+31611111111' END, CASE WHEN g %% 2 = 1 THEN %s ELSE '+31622222222' END, 60"
            " FROM generate_series(1, %s) g",
            [today, SUBJECT, SUBJECT, SUBJECT_ROWS],
        )
        conn.execute("VACUUM ANALYZE cdr")
        conn.execute(
            "SELECT pgretention.subject_table_register('public.cdr', %s)",
            [Jsonb({"caller": "phone", "callee": "phone"})],
        )
        ids = Jsonb({"phone": [SUBJECT]})
        partitions = one(conn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.cdr'::regclass")

        def export() -> int:
            return int(one(conn, "SELECT count(*) FROM pgretention.subject_rows(%s)", [ids]))

        def erase() -> int:
            with conn.transaction(force_rollback=True):
                out = one(conn, "SELECT pgretention._erase_subject(%s, NULL, now())", [ids])
            return int(out["public.cdr"]["deleted"])

        found = export()
        log(f"subject rows found: {found} in {partitions} partitions")
        plain_export = _median_ms(export, 3)
        plain_erase = _median_ms(erase, 3)
        stmts = [
            r[0] for r in conn.execute("SELECT statement FROM pgretention.subject_index_ddl('public.cdr')")
        ]
        index_ms, _ = timed(lambda: [conn.execute(s.encode()) for s in stmts])
        conn.execute("ANALYZE cdr")
        idx_export = _median_ms(export)
        idx_erase = _median_ms(erase)
        assert erase() == found == export()
    res.params.update(rows=f"{rows + SUBJECT_ROWS:,}", partitions=partitions, subject_rows=found)
    res.headers = ["request", "without indexes", "with pgretention's indexes", "speed-up"]
    res.rows = [
        [
            "export (all rows about the subject)",
            fmt_ms(plain_export),
            fmt_ms(idx_export),
            f"{ratio(plain_export, idx_export):.0f}x",
        ],
        [
            "erasure (delete, rolled back)",
            fmt_ms(plain_erase),
            fmt_ms(idx_erase),
            f"{ratio(plain_erase, idx_erase):.0f}x",
        ],
    ]
    res.figures.update(
        export_ms_plain=plain_export,
        export_ms_indexed=idx_export,
        erase_ms_plain=plain_erase,
        erase_ms_indexed=idx_erase,
        index_build_ms=index_ms,
        index_statements=len(stmts),
    )
    res.notes.append(
        f"index creation ({len(stmts)} statements, CONCURRENTLY per partition): {fmt_ms(index_ms)}"
    )
    res.checks += [
        Check("export with indexes", idx_export, 100, " ms"),
        Check("erasure with indexes", idx_erase, 100, " ms"),
    ]


def _holds(ctx: Context, dsn: str, res: Result) -> None:
    per_day = max(int(ROWS * ctx.scale / DAYS) * 4, 2000)
    kept_days = 5
    tables = ["public.cdr_free", "public.cdr_held"]
    with connect(dsn) as conn:
        today = server_today(conn)
        for t in tables:
            conn.execute(
                "SELECT pgretention.table_create(%s, %s, 'started_at', '1 day', %s, p_start => %s, p_premake => 2)",
                [
                    t,
                    CDR_COLUMNS,
                    Jsonb({"default": {"drop_after": f"{kept_days} days"}}),
                    today - timedelta(days=PURGE_DAYS + kept_days),
                ],
            )
    days = plan_days(today, [(d, per_day) for d in range(1, PURGE_DAYS + kept_days + 1)])
    load(dsn, tables, days, jobs=ctx.jobs)
    with connect(dsn) as conn:
        for t in tables:
            conn.execute(sql.SQL("CREATE INDEX ON {} (caller)").format(qualified(t)))
            conn.execute(sql.SQL("CREATE INDEX ON {} (callee)").format(qualified(t)))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(qualified(t)))
        conn.execute(
            "SELECT pgretention.subject_table_register('public.cdr_held', %s)",
            [Jsonb({"caller": "phone", "callee": "phone"})],
        )
        numbers = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT caller FROM cdr_held WHERE started_at < now() - make_interval(days => %s) LIMIT %s",
                [kept_days + 1, HOLD_SUBJECTS],
            )
        ]
        for n in numbers:
            conn.execute("SELECT pgretention.hold_set('disclosure order', 'BENCH', 'phone', %s)", [n])
        held = one(
            conn,
            "SELECT count(*) FROM cdr_held t WHERE t.started_at < now() - make_interval(days => %s) AND "
            "(t.caller = ANY(%s) OR t.callee = ANY(%s))",
            [kept_days + 1, numbers, numbers],
        )
        expired = one(
            conn,
            "SELECT count(*) FROM pgretention.plan(NULL, 'public.cdr_free') WHERE action = 'detach and drop'",
        )
        ctx.server.restart()
    timings = {}
    for t in tables:
        with connect(dsn) as conn:
            ms, _ = timed(
                lambda t=t: conn.execute("CALL pgretention.run(p_table => %s, p_runner => 'bench')", [t])
            )
            timings[t] = ms
    with connect(dsn) as conn:
        stored = one(conn, "SELECT count(*) FROM pgretention.hold_store WHERE table_name = 'cdr_held'")
        dropped = one(conn, "SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'")
    free_ms, held_ms = timings[tables[0]], timings[tables[1]]
    res.rows += [
        [f"purge of {expired} partitions, no holds", "", fmt_ms(free_ms), ""],
        [
            f"same with {len(numbers):,} subjects on hold",
            "",
            fmt_ms(held_ms),
            f"{ratio(held_ms, free_ms):.2f}x",
        ],
    ]
    res.figures.update(
        purge_ms_no_holds=free_ms,
        purge_ms_holds=held_ms,
        held_rows_expected=held,
        held_rows_stored=stored,
        partitions_dropped=dropped,
        hold_subjects=len(numbers),
        rows_per_partition=per_day,
    )
    res.checks += [
        Check("purge with holds / without", ratio(held_ms, free_ms), 2.0, "x"),
        Check("held rows preserved", float(stored), float(held), "", at_least=True),
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = ["export", "erasure"]
    ax.bar(
        [x - 0.2 for x in range(2)],
        [res.figures["export_ms_plain"], res.figures["erase_ms_plain"]],
        0.4,
        label="without indexes",
    )
    ax.bar(
        [x + 0.2 for x in range(2)],
        [res.figures["export_ms_indexed"], res.figures["erase_ms_indexed"]],
        0.4,
        label="with pgretention's indexes",
    )
    ax.axhline(100, color="red", linestyle="--", linewidth=1, label="target 100 ms")
    ax.set_xticks(range(2), labels)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.set_title(f"one subject (~{SUBJECT_ROWS:,} rows) in {res.params.get('rows')} CDRs")
    ax.legend()
    res.plots.append(save_figure(fig, ctx.out, NAME))
