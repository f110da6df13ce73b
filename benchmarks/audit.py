"""audit: the hash-chained audit log and the compliance report at volume.

1. Appends audit records (1M at scale 1) through ``pgretention._audit`` in four chunks and times
   ``verify_audit()`` after each: the walk is one set-based pass, linear in the records. Target:
   verify <= 20 s per million records; append >= 2,000 records/s (each append takes the chain lock,
   ten records per transaction).
2. ``audit_retention`` cuts the older half (backdated past audit_keep first: the retention runs on
   the clock): one checkpoint record, and the rest still verifies.
3. The compliance report (``pgretention.report.collect`` + HTML) over a CDR table with two classes
   and 400 daily partitions (2M rows at scale 1). Target: <= 15 s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from benchmarks.harness.meters import timed
from benchmarks.harness.results import Check, Result, fmt_ms, log, pyplot, save_figure
from benchmarks.harness.server import Context, connect, one
from pgretention import report

NAME = "audit"
RECORDS = 1_000_000
CHUNKS = 4
DAYS = 400
ROWS = 2_000_000


def run(ctx: Context) -> Result:
    res = Result(NAME, "audit chain append/verify/retention and the compliance report", ctx.scale)
    with ctx.database(NAME) as dsn:
        _chain(ctx, dsn, res)
        _report(ctx, dsn, res)
    return res


def _chain(ctx: Context, dsn: str, res: Result) -> None:
    total = max(int(RECORDS * ctx.scale), 20_000)
    chunk = total // CHUNKS
    points: list[tuple[int, float]] = []
    append_ms = 0.0
    with connect(dsn) as conn:
        for i in range(CHUNKS):
            log(f"audit: appending records {i * chunk + 1}-{(i + 1) * chunk}")
            # as the engines write them: a few records per transaction
            ms, _ = timed(conn.execute,
                          "DO $$BEGIN FOR g IN 1 .. " + str(int(chunk)) + " LOOP"
                          " PERFORM pgretention._audit('partition.drop', 'public.cdr', jsonb_build_object("
                          "'class', 'eu', 'partition', 'cdr_eu_p' || g, 'rows', g % 50000));"
                          " IF g % 10 = 0 THEN COMMIT; END IF; END LOOP; END$$")
            append_ms += ms
            n = one(conn, "SELECT count(*) FROM pgretention.audit_log")
            verify_ms, row = timed(lambda: conn.execute("SELECT ok FROM pgretention.audit_verify()").fetchone())
            assert row is not None and row[0] is True
            points.append((int(n), verify_ms))
            log(f"audit: verify of {n:,} records in {fmt_ms(verify_ms)}")
        # the audit log's retention runs on the clock: make the older half old enough (the
        # benchmark's superuser rewrites their times; the records it keeps are untouched and verify)
        mid = one(conn, "SELECT id FROM pgretention.audit_log ORDER BY id OFFSET %s LIMIT 1", [total // 2])
        conn.execute("ALTER TABLE pgretention.audit_log DISABLE TRIGGER audit_log_append_only")
        conn.execute("UPDATE pgretention.audit_log SET at = at - (SELECT value::interval + interval '1 day'"
                     " FROM pgretention.setting WHERE name = 'audit_keep') WHERE id < %s", [mid])
        conn.execute("ALTER TABLE pgretention.audit_log ENABLE TRIGGER audit_log_append_only")
        cut_ms, removed = timed(lambda: one(conn, "SELECT pgretention.audit_retention()"))
        after_ms, row = timed(lambda: conn.execute("SELECT ok, records FROM pgretention.audit_verify()").fetchone())
        assert row is not None and row[0] is True
    per_million = points[-1][1] / points[-1][0] * 1e6
    rate = CHUNKS * chunk / (append_ms / 1e3)
    res.params.update({"records": f"{points[-1][0]:,}"})
    res.headers = ["step", "records", "time"]
    res.rows = [[f"verify after chunk {i + 1}", f"{n:,}", fmt_ms(ms)] for i, (n, ms) in enumerate(points)]
    res.rows.append(["append (all chunks)", f"{CHUNKS * chunk:,}", fmt_ms(append_ms)])
    res.rows.append(["audit_retention (older half)", f"{int(removed):,} removed", fmt_ms(cut_ms)])
    res.rows.append(["verify after the cut", f"{int(row[1]):,}", fmt_ms(after_ms)])
    res.figures.update({"verify_points": points, "append_records_per_s": rate, "retention_ms": cut_ms,
                        "retention_removed": int(removed), "verify_after_cut_ms": after_ms})
    res.checks.append(Check("verify per million records", per_million / 1e3, 20, " s"))
    res.checks.append(Check("append rate", rate, 2000, " records/s", at_least=True))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in points], [p[1] / 1e3 for p in points], marker="o", color="#2f6db5")
    ax.set_xlabel("audit records")
    ax.set_ylabel("verify_audit() [s]")
    ax.set_title("Audit chain verification time")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    res.plots.append(save_figure(fig, ctx.out, NAME))


def _report(ctx: Context, dsn: str, res: Result) -> None:
    rows = max(int(ROWS * ctx.scale), DAYS * 50)
    with connect(dsn) as conn:
        today = one(conn, "SELECT date_trunc('day', now())")
        conn.execute(
            "SELECT pgretention.table_create('public.cdr', 'id bigint, region text, started_at timestamptz,"
            " caller text', 'started_at', '1 day', %s, p_class_column => 'region', p_default_class => 'intl',"
            " p_start => %s, p_premake => 2)",
            [Jsonb({"eu": {"drop_after": "180 days", "members": ["NL"]}, "intl": {"drop_after": "500 days"}}),
             today - timedelta(days=DAYS)])
        log(f"audit: loading {rows:,} CDRs over {DAYS} days for the report")
        conn.execute("INSERT INTO cdr SELECT g, CASE WHEN g %% 2 = 0 THEN 'NL' ELSE 'US' END,"
                     " %s::timestamptz - (g::float8 / %s) * make_interval(days => %s), 'c'"
                     " FROM generate_series(1, %s) g",
                     [today, rows, DAYS - 1, rows])
        conn.execute("ANALYZE cdr")
        conn.execute("CALL pgretention.run(p_runner => 'bench')")

        def build() -> Any:
            data = report.collect(conn, dsn)
            return data, report.render_html(data)

        ms, (data, page) = timed(build)
    res.rows.append(["compliance report (collect + HTML)", f"{rows:,} rows", fmt_ms(ms)])
    res.figures.update({"report_ms": ms, "report_rows": rows, "report_html_bytes": len(page),
                        "report_violations": data["summary"]["violations"]})
    res.checks.append(Check("compliance report", ms / 1e3, 15, " s"))
    if data["summary"]["violations"]:
        res.notes.append(f"the report found {data['summary']['violations']} violation(s) on benchmark data")
