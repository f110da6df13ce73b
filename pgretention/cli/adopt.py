"""Commands of online adoption: adopt, unadopt, adopt-cancel, adoptions."""

from __future__ import annotations

from typing import Any

import click
import psycopg
from psycopg import sql

from pgretention.cli.face import NOTICE_PREFIX, Ctx, call, confirm, emit, installed, pass_ctx, select, table
from pgretention.db import rows, translated

KEY_CHOICES = {"local": "local", "add-time": "add_time"}


@click.command("adopt")
@click.argument("name")
@click.option("--time-column", required=True, help="Column holding the time of each row.")
@click.option("--drop-after", required=True, help="Retention period, e.g. '13 months'.")
@click.option("--interval", "interval_", default="1 day", show_default=True, help="Partition interval.")
@click.option("--premake", default=4, show_default=True, type=int)
@click.option("--time-zone", default="UTC", show_default=True, help="Zone of a timestamp/date column's wall-clock time.")
@click.option("--key", "key", type=click.Choice(sorted(KEY_CHOICES)), default=None,
              help="For a primary key or unique constraint without the time column: keep it on the historical "
                   "partition only (local), or build a unique index (columns + time) concurrently and make that "
                   "the table's key (add-time).")
@click.option("--class-column", default=None, help="Not supported yet (refused with the way out).")
@click.option("--dry-run", is_flag=True, help="Print every step with the locks it takes; change nothing.")
@pass_ctx
def adopt(ctx: Ctx, name: str, time_column: str, drop_after: str, interval_: str, premake: int, time_zone: str,
          key: str | None, class_column: str | None, dry_run: bool) -> None:
    """Convert a plain table into a managed partitioned table online, under the same name."""
    key_sql = KEY_CHOICES[key] if key else None
    args = [name, time_column, drop_after, interval_, premake, time_zone, key_sql, class_column]
    if dry_run:
        steps = select(ctx, "SELECT * FROM pgretention.adopt_plan(%s, %s, %s, %s, %s, %s, %s, %s)", args)
        emit(ctx, {"table": name, "dry_run": True, "steps": steps},
             lambda d: table(f"pgretention adopt {d['table']} (dry run: nothing changed)", d["steps"]))
        return
    notices: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        notices.append((diag.message_primary or "").removeprefix(NOTICE_PREFIX))

    built: list[str] = []
    with installed(ctx, statement_timeout=None, notice_handler=on_notice) as conn, translated():
        if key_sql == "add_time":
            for ix in rows(conn, "SELECT * FROM pgretention.adopt_missing_indexes(%s, %s)", [name, time_column]):
                stmt = sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON {}.{} ({})").format(
                    sql.Identifier(ix["index_name"]), sql.Identifier(ix["table_schema"]),
                    sql.Identifier(ix["table_name"]), sql.SQL(", ").join(sql.Identifier(c) for c in ix["columns"]))
                conn.execute(stmt)
                built.append(ix["index_name"])
        conn.execute("CALL pgretention.adopt(%s, %s, %s, %s, %s, %s, %s, %s)", args)
        adoption = rows(conn, "SELECT a.id, a.table_id, a.historical_name, a.cutover, a.key_choice, a.state"
                              " FROM pgretention.adoption a JOIN pg_catalog.pg_namespace n ON n.nspname = a.table_schema"
                              " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = a.table_name"
                              " WHERE c.oid = pg_catalog.to_regclass(%s) ORDER BY a.id DESC LIMIT 1", [name])
    result: dict[str, Any] = {"table": name, "adoption": adoption[0] if adoption else None, "indexes_built": built,
                              "messages": notices}

    def render(d: dict[str, Any]) -> None:
        for ix_name in d["indexes_built"]:
            click.echo(f"built unique index {ix_name} concurrently")
        a = d["adoption"] or {}
        click.echo(f"{d['table']} adopted: rows before {a.get('cutover')} stay in historical partition "
                   f"{a.get('historical_name')} until they expire; key choice {a.get('key_choice')}")

    emit(ctx, result, render)


@click.command("unadopt")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def unadopt(ctx: Ctx, name: str, yes: bool) -> None:
    """Give an adopted table back as a plain table with all its rows (blocks it while rows are copied)."""
    confirm(yes, f"Turn {name} back into a plain table (the application waits while rows are copied)?")
    copied = call(ctx, "SELECT pgretention.adopt_undo(%s)", [name], statement_timeout=None)
    emit(ctx, {"table": name, "rows": copied},
         lambda d: click.echo(f"{d['table']} is a plain table again with {d['rows']} rows"))


@click.command("adopt-cancel")
@click.argument("name")
@pass_ctx
def adopt_cancel(ctx: Ctx, name: str) -> None:
    """Abandon an adoption interrupted before its swap (removes its CHECK constraint)."""
    call(ctx, "SELECT pgretention.adopt_cancel(%s)", [name])
    emit(ctx, {"table": name, "cancelled": True}, lambda d: click.echo(f"adoption of {d['table']} cancelled"))


@click.command("adoptions")
@pass_ctx
def adoptions(ctx: Ctx) -> None:
    """Adoptions and the state of their historical partitions."""
    found = select(ctx, "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS table, state, historical_name,"
                        " cutover, key_choice, rows_purged, adopted_at, finished_at FROM pgretention.adoption"
                        " ORDER BY id")
    emit(ctx, found, lambda r: table("pgretention adoptions", r) if r else click.echo("no adoptions"))


COMMANDS = (adopt, unadopt, adopt_cancel, adoptions)
