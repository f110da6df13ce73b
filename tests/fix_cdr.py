"""CDR tables that the tests of several engines build on.

:func:`create_cdr` makes a managed table of call detail records with the given classes;
:func:`simulate_800_days` is the partition engine's long simulation (run on one server by
tests/partition and on a distributed table by tests/citus); :func:`daily_cdr` makes a table filled
with days of calls up to now, and :func:`expired_partitions` says what a run would drop from it.
:func:`leaf_at` names the partition that holds a time, read from the catalog: pg_partman 4.x and 5.x
name partitions differently (``cdr_p2025_03_01``, ``cdr_p20250301``), so no test spells a name.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg.types.json import Jsonb

from tests.fix_db import DB, simulate

UTC = timezone.utc
CDR_COLUMNS = "id bigint, region text, started_at timestamptz, caller text, callee text, duration int"
DAY = 86400.0


def create_cdr(db: DB, classes: dict[str, Any], *, interval: str = "1 day", start: datetime,
               default: str | None = None, class_column: str | None = "region", name: str = "public.cdr",
               columns: str = CDR_COLUMNS, time_column: str = "started_at", **kw: Any) -> None:
    db.execute(
        "SELECT pgretention.table_create(%s, %s, %s, %s, %s, p_class_column => %s, p_default_class => %s,"
        " p_start => %s" + "".join(f", {k} => %s" for k in kw) + ")",
        [name, columns, time_column, interval, Jsonb(classes), class_column, default, start, *kw.values()],
    )


def simulate_800_days(engine: DB, layout: str, **create: Any) -> None:
    """The 800-day simulation of three classes (also run on Citus by tests/citus)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    classes = {"eu": {"drop_after": "6 months", "members": ["NL", "DE"]},
               "sms": {"drop_after": "13 months", "members": ["SMS"]},
               "intl": {"drop_after": "24 months"}}
    create_cdr(engine, classes, interval="1 week", start=start, default="intl", p_premake=2, p_layout=layout, **create)
    drop_after = {"eu": relativedelta_months(6), "sms": relativedelta_months(13), "intl": relativedelta_months(24)}
    region_class = {"NL": "eu", "DE": "eu", "SMS": "sms", "US": "intl", "BR": "intl"}
    inserted: list[tuple[str, datetime]] = []
    next_id = 0
    with engine.connect() as conn:
        for day in range(800):
            now = start + timedelta(days=day, hours=23)
            rows = []
            for region, cls in region_class.items():
                for k in range(2):
                    ts = start + timedelta(days=day, hours=3 + 9 * k)
                    rows.append((next_id, region, ts))
                    inserted.append((cls, ts))
                    next_id += 1
            if day % 50 == 49:  # a late row, 40 days old, and one so old no partition holds it
                for region in ("NL", "US"):
                    for age in (40, 900):
                        ts = now - timedelta(days=age)
                        rows.append((next_id, region, ts))
                        inserted.append((region_class[region], ts))
                        next_id += 1
            with conn.cursor().copy("COPY cdr (id, region, started_at) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [now])
            if day % 25 != 24 and day != 799:
                continue
            for cls in ("eu", "sms", "intl"):
                cutoff = drop_after[cls](now)
                regions = [r for r, c in region_class.items() if c == cls]
                stale = conn.execute(
                    "SELECT count(*) FROM cdr WHERE region = ANY(%s) AND started_at < %s",
                    [regions, cutoff - timedelta(weeks=1, hours=1)]).fetchone()[0]  # type: ignore[index]
                kept = conn.execute("SELECT count(*) FROM cdr WHERE region = ANY(%s) AND started_at >= %s",
                                    [regions, cutoff]).fetchone()[0]  # type: ignore[index]
                expected = sum(1 for c, ts in inserted if c == cls and ts >= cutoff)
                assert stale == 0, (day, cls)
                assert kept == expected, (day, cls, kept, expected)
        failed = conn.execute("SELECT count(*) FROM pgretention.job_run WHERE status <> 'ok'").fetchone()[0]  # type: ignore[index]
        assert failed == 0
        dropped = conn.execute("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'").fetchone()[0]  # type: ignore[index]
        audited = conn.execute("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'").fetchone()[0]  # type: ignore[index]
        if layout == "class":
            assert dropped == audited > 100
        else:  # shared partitions go with the longest class (24 months); shorter classes' rows before
            assert dropped == audited >= 9
            purged = conn.execute("SELECT count(DISTINCT (d.details ->> 'class', d.details ->> 'from'))"
                                  " FROM pgretention.audit_log d WHERE d.action = 'class.purge'").fetchone()[0]  # type: ignore[index]
            assert purged > 100
        assert conn.execute("SELECT ok FROM pgretention.audit_verify()").fetchone()[0] is True  # type: ignore[index]


def relativedelta_months(months: int) -> Any:
    """now -> now minus `months` calendar months, as PostgreSQL's interval arithmetic does in UTC."""

    def back(now: datetime) -> datetime:
        y, m = divmod(now.month - 1 - months, 12)
        year, month = now.year + y, m + 1
        day = min(now.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30,
                            31, 31, 30, 31, 30, 31][month - 1])
        return now.replace(year=year, month=month, day=day)

    return back


def daily_cdr(db: DB, *, days: int, rows_per_day: int, drop_after: str = "10 days") -> datetime:
    """A managed CDR table with ``days`` days of calls up to now, one partition a day; returns now."""
    simulate(db)
    at: datetime = db.one("SELECT date_trunc('second', now())")
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text,"
               " callee text, duration int', 'started_at', '1 day', %s, p_start => %s::timestamptz - make_interval(days => %s))",
               [Jsonb({"all": {"drop_after": drop_after}}), at, days + 1])
    db.execute("INSERT INTO cdr SELECT g, %s::timestamptz - make_interval(days => %s) + g * make_interval(secs => %s),"
               " '+3162' || g, '+3163' || g, g %% 600 FROM generate_series(1, %s) g",
               [at, days, DAY / rows_per_day, days * rows_per_day - 1])
    db.execute("ANALYZE cdr")
    return at


def expired_partitions(db: DB, at: datetime) -> dict[str, int]:
    """Partitions a run at ``at`` drops, with their exact row counts."""
    leaves = [r[0] for r in db.all("SELECT leaf_name FROM pgretention._expired_leaves(1, 'all', %s)", [at])]
    counts = dict(db.all("SELECT tableoid::regclass::text, count(*) FROM cdr GROUP BY 1"))
    return {leaf: counts.get(leaf, 0) for leaf in leaves}


def leaf_at(db: DB, parent: str, at: datetime) -> str:
    """The schema-qualified name of the leaf partition under ``parent`` (any depth) whose range holds
    ``at``, read from the catalog (pg_partition_tree and the partitions' bounds), not from a pattern."""
    with db.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        row = conn.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname)"
            " FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace,"
            " LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \\('([^']*)'\\) TO \\('([^']*)'\\)$$) b"
            " WHERE t.isleaf AND b[1]::timestamptz <= %s AND %s < b[2]::timestamptz",
            [parent, at, at],
        ).fetchall()
    assert len(row) == 1, f"{len(row)} partitions of {parent} hold {at}"
    return str(row[0][0])
