"""Commands of the partition engine: run, plan, status, managed tables, classes, members, settings."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import click
from psycopg.types.json import Jsonb
from rich.progress import Progress, TaskID

from pgretention import schedule
from pgretention.cli.anonymiser import unruled_columns
from pgretention.cli.face import (
    Ctx,
    call,
    emit,
    installed,
    key_value,
    now_option,
    pass_ctx,
    run_job,
    select,
    table,
    utc,
)
from pgretention.db import rows, translated
from pgretention.errors import InvalidInput
from pgretention.human import age, size

# NAME:DROP_AFTER[:ANONYMISE_AFTER]. The name part repeats SQL's _check_class_name so that a bad
# --class is refused in one message that names the option and the form (the SQL message names the class).
CLASS_SPEC = re.compile(r"^([a-z][a-z0-9_]{0,29}):([^:]+)(?::([^:]+))?$")


def _parse_classes(specs: tuple[str, ...], members: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    classes: dict[str, dict[str, Any]] = {}
    for spec in specs:
        m = CLASS_SPEC.match(spec)
        if not m:
            raise InvalidInput(f"invalid --class {spec!r}: expected NAME:DROP_AFTER[:ANONYMISE_AFTER], e.g. eu:'6 months'")
        d: dict[str, Any] = {"drop_after": m.group(2)}
        if m.group(3):
            d["anonymise_after"] = m.group(3)
        classes[m.group(1)] = d
    for item in members:
        value, cls = key_value("--member", item, "VALUE=CLASS with a class given by --class", last=True,
                               valid=lambda v, c: bool(v) and c in classes)
        classes[cls].setdefault("members", []).append(value)
    if not classes:
        raise InvalidInput("at least one --class NAME:DROP_AFTER is needed")
    return classes


# -- run / plan / status ---------------------------------------------------------------------
@click.command()
@click.option("--table", "table_name", default=None, help="Only this managed table.")
@now_option
@pass_ctx
def run(ctx: Ctx, table_name: str | None, ref: datetime | None) -> None:
    """Premake partitions, drop expired ones, purge default partitions (what the pg_cron job does)."""
    at = utc(ref)
    planned = select(ctx, "SELECT * FROM pgretention.plan(%s, %s)", [at, table_name])

    def step(msg: str, progress: Progress, task: TaskID) -> None:
        if "dropped partition" in msg or "deleted" in msg or "finished pending" in msg:
            progress.advance(task)
            progress.update(task, description=msg[:60])

    run_job(ctx, "CALL pgretention.run(p_now => %s, p_table => %s, p_runner => 'cli')", [at, table_name],
            engine=None, label="purging", total=max(len(planned), 1), step=step, keep_prefix=True)


@click.command()
@click.option("--table", "table_name", default=None)
@now_option
@pass_ctx
def plan(ctx: Ctx, table_name: str | None, ref: datetime | None) -> None:
    """What the next run would remove; changes nothing."""
    found = select(ctx, "SELECT * FROM pgretention.plan(%s, %s)", [utc(ref), table_name])
    emit(ctx, found, lambda r: table("pgretention plan", r) if r else click.echo("nothing to remove"))


@click.command()
@now_option
@pass_ctx
def status(ctx: Ctx, ref: datetime | None) -> None:
    """Retention, overshoot, oldest row, partitions, default rows, last and next run per table and class."""
    with installed(ctx) as conn:
        found = rows(conn, "SELECT * FROM pgretention.status(%s)", [utc(ref)])
        unruled = unruled_columns(conn)
    job = schedule.job_state(ctx.dsn)
    data = {"tables": found, "schedule": job,
            "columns_without_anonymisation_rule": {u["table_name"]: u["columns"] for u in unruled}}

    def render(d: dict[str, Any]) -> None:
        shown = [
            {
                "table": r["table_name"], "class": r["class_name"], "drop after": age(r["drop_after"]),
                "partition": age(r["partition_interval"]), "worst overshoot": age(r["worst_case_overshoot"]),
                "partitions": r["partitions"], "size": size(r["total_bytes"]),
                "oldest row age": age(r["oldest_row_age"]), "expired parts": r["expired_partitions"],
                "default rows": "-" if r["default_rows"] is None
                else f"{r['default_rows']} ({r['expired_default_rows']} expired)",
                "no time": r["null_time_rows"], "pending": r["pending_ops"],
                "last run": r["last_run_status"] or "never",
            }
            for r in d["tables"]
        ]
        table("pgretention status", shown)
        for problem in dict.fromkeys(r["problem"] for r in d["tables"] if r.get("problem")):
            click.echo(f"error: {problem}")  # a table retention cannot act on (dropped, renamed, a column gone)
        for name, cols in d["columns_without_anonymisation_rule"].items():
            click.echo(f"warning: {name} has anonymisation rules but none for: {', '.join(cols)}")
        j = d["schedule"]
        if j.get("error"):
            click.echo(f"pg_cron: {j['error']}")
        elif not j.get("pg_cron"):
            click.echo(schedule.FALLBACK)
        elif not j.get("scheduled"):
            click.echo(f"pg_cron job {j['job']} is not scheduled (run `pgretention install`)")
        else:
            last = j.get("last_run") or {}
            last_s = f"{last['start']:%Y-%m-%d %H:%M} {last.get('status')}" if last.get("start") else "never"
            next_s = f"{j['next_run']:%Y-%m-%d %H:%M} UTC" if j.get("next_run") else "-"
            click.echo(f"pg_cron job {j['job']}: '{j['schedule']}' (GMT), active: {j['active']}, "
                       f"last run: {last_s}, next run: {next_s}")

    emit(ctx, data, render)


# -- policy ----------------------------------------------------------------------------------
@click.group("table")
def table_group() -> None:
    """Managed tables."""


@table_group.command("create")
@click.argument("name")
@click.option("--columns", required=True, help="Column list, e.g. 'id bigint, started_at timestamptz NOT NULL'.")
@click.option("--time-column", required=True)
@click.option("--interval", "interval_", default="1 day", show_default=True)
@click.option("--class", "classes", multiple=True, help="NAME:DROP_AFTER[:ANONYMISE_AFTER]; repeatable.")
@click.option("--class-column", default=None)
@click.option("--default-class", default=None)
@click.option("--member", "members", multiple=True, help="VALUE=CLASS; repeatable.")
@click.option("--premake", default=4, show_default=True, type=int)
@click.option("--time-zone", default="UTC", show_default=True, help="Zone of timestamp/date columns.")
@click.option("--min-drop-after", default=None)
@click.option("--max-drop-after", default=None)
@click.option("--archive-schema", default=None, help="Move expired partitions here instead of dropping them.")
@click.option("--layout", type=click.Choice(["class", "time"]), default=None,
              help="class: LIST by class, then RANGE by time (default); time: RANGE by time, classes share "
                   "partitions (the layout of distributed tables).")
@click.option("--distribute-by", default=None, help="Citus: distribute the table by this column (e.g. the subscriber).")
@pass_ctx
def table_create(ctx: Ctx, name: str, columns: str, time_column: str, interval_: str, classes: tuple[str, ...],
                 class_column: str | None, default_class: str | None, members: tuple[str, ...], premake: int,
                 time_zone: str, min_drop_after: str | None, max_drop_after: str | None,
                 archive_schema: str | None, layout: str | None, distribute_by: str | None) -> None:
    """Create a new managed, partitioned table."""
    cls = _parse_classes(classes, members)
    tid = call(
        ctx, "SELECT pgretention.table_create(%s, %s, %s, %s, %s, p_class_column => %s, p_default_class => %s,"
        " p_premake => %s, p_time_zone => %s, p_min_drop_after => %s, p_max_drop_after => %s,"
        " p_on_expiry => %s, p_archive_schema => %s, p_layout => %s, p_distribute_by => %s)",
        [name, columns, time_column, interval_, Jsonb(cls), class_column, default_class, premake, time_zone,
         min_drop_after, max_drop_after, "archive" if archive_schema else "drop", archive_schema,
         layout, distribute_by],
    )
    emit(ctx, {"table": name, "id": tid, "classes": cls},
         lambda d: click.echo(f"created {d['table']} with classes {', '.join(d['classes'])}"))


@table_group.command("manage")
@click.argument("name")
@click.option("--time-column", required=True)
@click.option("--interval", "interval_", default="1 day", show_default=True)
@click.option("--drop-after", required=True)
@click.option("--anonymise-after", default=None)
@click.option("--premake", default=4, show_default=True, type=int)
@pass_ctx
def table_manage(ctx: Ctx, name: str, time_column: str, interval_: str, drop_after: str,
                 anonymise_after: str | None, premake: int) -> None:
    """Manage an existing table partitioned by range on its time column."""
    cls: dict[str, Any] = {"default": {"drop_after": drop_after}}
    if anonymise_after:
        cls["default"]["anonymise_after"] = anonymise_after
    call(ctx, "SELECT pgretention.table_manage(%s, %s, %s, %s, p_premake => %s)",
              [name, time_column, interval_, Jsonb(cls), premake])
    emit(ctx, {"table": name}, lambda d: click.echo(f"{d['table']} is now managed"))


@table_group.command("release")
@click.argument("name")
@pass_ctx
def table_release(ctx: Ctx, name: str) -> None:
    """Stop managing a table (its data stays)."""
    call(ctx, "SELECT pgretention.table_release(%s)", [name])
    emit(ctx, {"released": name}, lambda d: click.echo(f"released {d['released']}"))


@click.group("class")
def class_group() -> None:
    """Retention classes."""


@class_group.command("add")
@click.argument("table_name")
@click.argument("name")
@click.option("--drop-after", required=True)
@click.option("--anonymise-after", default=None)
@click.option("--member", "members", multiple=True)
@pass_ctx
def class_add(ctx: Ctx, table_name: str, name: str, drop_after: str, anonymise_after: str | None,
              members: tuple[str, ...]) -> None:
    """Add a retention class to a managed table."""
    call(ctx, "SELECT pgretention.class_add(%s, %s, %s, %s, %s)",
              [table_name, name, drop_after, anonymise_after, list(members) or None])
    emit(ctx, {"table": table_name, "class": name}, lambda d: click.echo(f"added class {d['class']}"))


@class_group.command("set")
@click.argument("table_name")
@click.argument("name")
@click.option("--drop-after", required=True)
@click.option("--anonymise-after", default=None)
@pass_ctx
def class_set(ctx: Ctx, table_name: str, name: str, drop_after: str, anonymise_after: str | None) -> None:
    """Change a class's periods (a shorter period applies at the next run)."""
    call(ctx, "SELECT pgretention.class_set(%s, %s, %s, %s)", [table_name, name, drop_after, anonymise_after])
    emit(ctx, {"table": table_name, "class": name}, lambda d: click.echo(f"changed class {d['class']}"))


@click.command("assign")
@click.argument("table_name")
@click.argument("value")
@click.argument("class_name")
@pass_ctx
def assign(ctx: Ctx, table_name: str, value: str, class_name: str) -> None:
    """Assign a class-column value (tenant, region) to a class."""
    res = call(ctx, "SELECT pgretention.member_assign(%s, %s, %s)", [table_name, value, class_name])
    emit(ctx, {"result": res}, lambda d: click.echo(d["result"]))


@click.group("settings")
def settings_group() -> None:
    """Engine settings."""


@settings_group.command("show")
@pass_ctx
def settings_show(ctx: Ctx) -> None:
    found = select(ctx, "SELECT name, value, description FROM pgretention.setting ORDER BY name")
    emit(ctx, found, lambda r: table("pgretention settings", r))


@settings_group.command("set")
@click.argument("name")
@click.argument("value")
@pass_ctx
def settings_set(ctx: Ctx, name: str, value: str) -> None:
    with installed(ctx) as conn, translated():
        if name == "schedule":
            schedule.validate(value)
            conn.execute("SELECT pgretention.setting_set('schedule_max_gap', %s)", [schedule.max_gap(value)])
        conn.execute("SELECT pgretention.setting_set(%s, %s)", [name, value])
    msg = f"{name} = {value}"
    if name == "schedule":
        msg += "; " + schedule.ensure_job(ctx.dsn)
    emit(ctx, {"setting": name, "value": value, "message": msg}, lambda d: click.echo(d["message"]))


COMMANDS = (run, plan, status, table_group, class_group, assign, settings_group)
