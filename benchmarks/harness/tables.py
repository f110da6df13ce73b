"""The tables the benchmarks compare: managed by pgretention, by pg_partman alone, or plain; and
their test data, from :mod:`pgretention.generator` (its ``uniform`` profile: the same rows as the
first published figures, so results stay comparable).

Call detail records (CDRs) are generated server side, deterministically: the same day plan
(:func:`pgretention.generator.plan_days`) gives the same rows in every table, so methods compared in
one run see identical data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.results import log
from benchmarks.harness.server import one
from pgretention import generator

Conn = psycopg.Connection[Any]

DROP_AFTER_DAYS = 30
CDR_COLUMNS = "id bigint, started_at timestamptz NOT NULL, caller text, callee text, duration int"
INDEXED_COLUMNS = ("started_at", "caller", "callee")
ROWS = generator.Options(profile="uniform")


def load(dsn: str, tables: Sequence[str], days: Sequence[generator.Day], *, jobs: int = 2) -> float:
    """Insert the rows of ``days`` into each of ``tables`` (same rows in each), ``jobs`` connections
    in parallel. Returns seconds taken."""
    res = generator.load_days(dsn, tables, days, options=ROWS, jobs=jobs, chunk=500_000)
    log(
        f"loaded {res.rows:,} rows into {', '.join(tables)} in {res.seconds:.1f}s"
        f" ({res.rows_per_second:,.0f} rows/s)"
    )
    return res.seconds


def qualified(table: str) -> sql.Composable:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema or "public", name)


def time_partitions(conn: Conn, table: str) -> list[tuple[str, datetime, int]]:
    """Leaf partitions with a range bound (the default partition left out): name, lower bound, bytes."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname),"
        " (regexp_match(pg_get_expr(c.relpartbound, c.oid),"
        "               '^FOR VALUES FROM \\(''([^'']*)''\\)'))[1]::timestamptz,"
        " pg_total_relation_size(t.relid)"
        " FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
        [table],
    ).fetchall()
    out = [(str(name), lower, int(size)) for name, lower, size in rows if isinstance(lower, datetime)]
    return sorted(out, key=lambda r: r[1])


def partman_schema(conn: Conn) -> str:
    return str(
        one(
            conn,
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'pg_partman'",
        )
    )


# -- tables --------------------------------------------------------------------------------------


def drop_after_json() -> str:
    return json.dumps({"default": {"drop_after": f"{DROP_AFTER_DAYS} days"}})


def create_pgretention_table(conn: Conn, table: str, start: datetime, premake: int = 4) -> None:
    """A table managed by pgretention: daily partitions from ``start``, drop_after 30 days."""
    conn.execute(
        "SELECT pgretention.table_create(%s, %s, 'started_at', '1 day', %s::jsonb,"
        " p_start => %s, p_premake => %s)",
        [table, CDR_COLUMNS, drop_after_json(), start, premake],
    )


def create_partman_table(conn: Conn, table: str, start: datetime, premake: int = 4) -> None:
    """The same layout managed by pg_partman alone, with pg_partman's retention of 30 days."""
    schema = sql.Identifier(partman_schema(conn))
    conn.execute(
        sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE (started_at)").format(
            qualified(table), sql.SQL(CDR_COLUMNS)
        )
    )
    conn.execute(
        sql.SQL(
            "SELECT {}.create_parent(p_parent_table := %s, p_control := 'started_at', p_type := 'native',"
            " p_interval := '1 day', p_premake := %s, p_start_partition := %s, p_jobmon := false)"
        ).format(schema),
        [table, premake, start.strftime("%Y-%m-%d %H:%M:%S")],
    )
    conn.execute(
        sql.SQL(
            "UPDATE {}.part_config SET retention = %s, retention_keep_table = false,"
            " retention_keep_index = false WHERE parent_table = %s"
        ).format(schema),
        [f"{DROP_AFTER_DAYS} days", table],
    )


def drop_partman_table(conn: Conn, table: str) -> None:
    schema = sql.Identifier(partman_schema(conn))
    template = one(
        conn,
        sql.SQL("SELECT template_table FROM {}.part_config WHERE parent_table = %s").format(schema),
        [table],
    )
    conn.execute(sql.SQL("DELETE FROM {}.part_config WHERE parent_table = %s").format(schema), [table])
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(qualified(table)))
    if template:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(str(template))))


def drop_pgretention_table(conn: Conn, table: str) -> None:
    conn.execute("SELECT pgretention.table_release(%s)", [table])
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(qualified(table)))


def create_plain_table(conn: Conn, table: str) -> None:
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(qualified(table), sql.SQL(CDR_COLUMNS)))


def add_indexes(conn: Conn, table: str) -> None:
    """Indexes on time, caller and callee; on a partitioned table they reach every partition."""
    for column in INDEXED_COLUMNS:
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(qualified(table), sql.Identifier(column)))


def settle(conn: Conn, table: str) -> None:
    """After a load: autovacuum off for the table's leaves (also on a --dsn server), VACUUM ANALYZE,
    so that every method starts from the steady state of data that autovacuum has long seen."""
    leaves = [
        r[0]
        for r in conn.execute(
            "SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t WHERE t.isleaf", [table]
        )
    ]
    for leaf in leaves or [table]:
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(sql.SQL(leaf)))
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(qualified(table)))
