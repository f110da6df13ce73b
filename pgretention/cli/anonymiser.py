"""Commands of the anonymiser: column rules, runs, pseudonym keys, roll-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import psycopg
from psycopg.types.json import Jsonb

from pgretention.cli.face import (
    Ctx,
    call,
    emit,
    installed,
    key_value,
    now_option,
    pass_ctx,
    table,
    utc,
)
from pgretention.db import Conn, rows, translated
from pgretention.errors import InvalidInput


def unruled_columns(conn: Conn) -> list[dict[str, Any]]:
    """Managed tables with anonymisation rules, and their columns that have none."""
    found = rows(conn, "SELECT format('%I.%I', m.table_schema, m.table_name) AS table_name,"
                       " pgretention.anon_unruled_columns(m.id) AS columns FROM pgretention.managed_table m")
    return [u for u in found if u["columns"]]


@click.group("anonymise")
def anon_group() -> None:
    """Anonymisation rules and runs (partition rewrite-and-swap)."""


@anon_group.command("rule")
@click.argument("table_name")
@click.argument("column")
@click.argument("method", type=click.Choice(["pseudonym", "e164_prefix", "ip_prefix", "null", "constant",
                                             "time_trunc", "redact", "jsonb_drop", "keep"]))
@click.argument("param", required=False)
@pass_ctx
def anon_rule(ctx: Ctx, table_name: str, column: str, method: str, param: str | None) -> None:
    """Set how COLUMN of TABLE is anonymised."""
    call(ctx, "SELECT pgretention.anon_rule_set(%s, %s, %s, %s)", [table_name, column, method, param])
    emit(ctx, {"table": table_name, "column": column, "method": method, "param": param},
         lambda d: click.echo(f"{d['table']}.{d['column']}: {d['method']} {d['param'] or ''}".rstrip()))


@anon_group.command("rules")
@pass_ctx
def anon_rules(ctx: Ctx) -> None:
    """Rules per table, and columns that have none."""
    with installed(ctx) as conn:
        rules = rows(conn, "SELECT format('%I.%I', m.table_schema, m.table_name) AS table_name, r.column_name, r.method,"
                           " r.param FROM pgretention.anon_rule r JOIN pgretention.managed_table m ON m.id = r.table_id"
                           " ORDER BY 1, 2")
        missing = unruled_columns(conn)
    data = {"rules": rules, "columns_without_rule": missing}

    def render(d: dict[str, Any]) -> None:
        table("anonymisation rules", d["rules"]) if d["rules"] else click.echo("no rules")
        for m in d["columns_without_rule"]:
            click.echo(f"warning: {m['table_name']}: no rule for {', '.join(m['columns'])}")

    emit(ctx, data, render)


@anon_group.command("run")
@click.option("--table", "table_name", default=None)
@now_option
@pass_ctx
def anon_run(ctx: Ctx, table_name: str | None, ref: datetime | None) -> None:
    """Anonymise every partition past its class's anonymise_after (also part of `pgretention run`)."""
    notes: list[str] = []

    def on_notice(d: psycopg.errors.Diagnostic) -> None:
        notes.append(d.message_primary or "")
        if ctx.fmt != "json":
            click.echo(d.message_primary or "")

    with installed(ctx, statement_timeout=None, notice_handler=on_notice) as conn, translated():
        conn.execute("CALL pgretention.anon_run(%s, %s)", [utc(ref), table_name])
    if ctx.fmt == "json":
        emit(ctx, {"messages": notes})


@anon_group.command("key")
@click.argument("action", type=click.Choice(["rotate", "destroy", "list"]))
@click.argument("epoch", required=False)
@click.option("--yes", is_flag=True)
@pass_ctx
def anon_key(ctx: Ctx, action: str, epoch: str | None, yes: bool) -> None:
    """Rotate or destroy the pseudonym key of an epoch (a quarter, e.g. 2026q3), or list epochs."""
    with installed(ctx) as conn, translated():
        if action == "list":
            keys = rows(conn, "SELECT epoch, created_at, rotated_at, destroyed_at FROM pgretention.anon_key ORDER BY epoch")
            emit(ctx, keys, lambda r: table("pseudonym keys", r) if r else click.echo("no keys"))
            return
        if not epoch:
            raise InvalidInput(f"key {action} needs an epoch such as 2026q3")
        if action == "destroy" and not yes:
            raise InvalidInput(f"destroying the key of {epoch} makes its pseudonyms unlinkable forever; add --yes")
        if action == "rotate":
            conn.execute("SELECT pgretention.anon_key_rotate(%s)", [epoch])
        else:
            conn.execute("SELECT pgretention.anon_key_destroy(%s)", [epoch])
    done = {"rotate": "rotated", "destroy": "destroyed"}[action]
    emit(ctx, {"epoch": epoch, "action": action}, lambda d: click.echo(f"key of {epoch}: {done}"))


@click.group("rollup")
def rollup_group() -> None:
    """Non-identifying statistics written before raw data goes."""


@rollup_group.command("add")
@click.argument("table_name")
@click.argument("name")
@click.option("--group", "groups", multiple=True, required=True,
              help="COLUMN, COLUMN:trunc=day or COLUMN:prefix=4; repeatable.")
@click.option("--measure", "measures", multiple=True, required=True,
              help="NAME=count or NAME=sum:COLUMN (sum, min, max, avg); repeatable.")
@click.option("--min-group-size", default=5, show_default=True, type=int)
@pass_ctx
def rollup_add(ctx: Ctx, table_name: str, name: str, groups: tuple[str, ...], measures: tuple[str, ...],
               min_group_size: int) -> None:
    group_by: list[dict[str, Any]] = []
    for g in groups:
        col, _, opt = g.partition(":")
        item: dict[str, Any] = {"column": col}
        if opt:
            key, value = key_value("--group", opt, "COLUMN:trunc=UNIT or COLUMN:prefix=N", given=g,
                                   valid=lambda k, _v: k in ("trunc", "prefix"))
            item[key] = int(value) if key == "prefix" and value.isdigit() else value
        group_by.append(item)
    meas = dict(key_value("--measure", m, "NAME=count or NAME=sum:COLUMN") for m in measures)
    target = call(ctx, "SELECT pgretention.rollup_add(%s, %s, %s, %s, %s)",
                       [table_name, name, Jsonb(group_by), Jsonb(meas), min_group_size])
    emit(ctx, {"rollup": name, "target": target},
         lambda d: click.echo(f"roll-up {d['rollup']} writes to {d['target']}"))


COMMANDS = (anon_group, rollup_group)
