"""Entity engine commands: ``pgretention entity rule|run|plan|status|notices|erase``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

import click
from psycopg.types.json import Jsonb
from rich.progress import Progress, TaskID

from pgretention.cli.face import (
    Ctx,
    call,
    confirm,
    emit,
    installed,
    now_option,
    pass_ctx,
    run_job,
    select,
    table,
    utc,
)
from pgretention.db import rows
from pgretention.errors import InvalidInput


def _json_arg(name: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"invalid JSON for {name}: {exc.msg} at character {exc.pos}") from exc


@click.group("entity")
def entity_group() -> None:
    """Row-level retention of accounts, customers, consent proofs and other ordinary tables."""


@entity_group.group("rule")
def rule_group() -> None:
    """Entity rules."""


@rule_group.command("create")
@click.argument("name")
@click.option("--table", "table_name", required=True, help="schema.table the rule applies to.")
@click.option("--key", "key_column", default="id", show_default=True, help="Unique key column.")
@click.option("--activity", required=True,
              help='JSON list of sources, e.g. \'[{"column": "last_login_at"}, '
                   '{"table": "public.credit", "fk": "account_id", "column": "expires_at"}]\'.')
@click.option("--period", required=True, help="How long after the last activity (or end) rows are kept.")
@click.option("--action", type=click.Choice(["delete", "anonymise"]), default="delete", show_default=True)
@click.option("--anonymise", "anonymise", default=None,
              help='Column actions of an anonymise rule, e.g. \'{"email": {"action": "hash"}, '
                   '"name": {"action": "null"}}\'.')
@click.option("--dependants", default=None,
              help='JSON list of child tables cleaned first, e.g. \'[{"table": "public.contact", "fk": "account_id"}]\'.'
                   " Without it, foreign keys must cascade.")
@click.option("--parent-column", default=None, help="Column holding the parent row's key (hierarchies).")
@click.option("--exempt-column", default=None, help="Boolean column: rows where it is true are never purged.")
@click.option("--notice", "notice_period", default=None, help="List rows this long before they are deleted.")
@pass_ctx
def rule_create(ctx: Ctx, name: str, table_name: str, key_column: str, activity: str, period: str, action: str,
                anonymise: str | None, dependants: str | None, parent_column: str | None, exempt_column: str | None,
                notice_period: str | None) -> None:
    """Create an entity rule."""
    act = _json_arg("--activity", activity)
    anon = _json_arg("--anonymise", anonymise)
    deps = _json_arg("--dependants", dependants)
    rule_id = call(
        ctx, "SELECT pgretention.entity_rule_create(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [name, table_name, key_column, Jsonb(act), period, action, None if anon is None else Jsonb(anon),
         Jsonb(deps if deps is not None else []), parent_column, exempt_column, notice_period],
    )
    emit(ctx, {"rule": name, "id": rule_id},
         lambda d: click.echo(f"created entity rule {d['rule']}"))


@rule_group.command("drop")
@click.argument("name")
@pass_ctx
def rule_drop(ctx: Ctx, name: str) -> None:
    """Drop an entity rule (its table is not touched)."""
    call(ctx, "SELECT pgretention.entity_rule_drop(%s)", [name])
    emit(ctx, {"dropped": name}, lambda d: click.echo(f"dropped entity rule {d['dropped']}"))


@rule_group.command("list")
@pass_ctx
def rule_list(ctx: Ctx) -> None:
    """Show the entity rules."""
    rules = select(ctx, "SELECT rule_name AS rule, format('%I.%I', table_schema, table_name) AS table,"
                        " key_column AS key, activity, period::text, action, anonymise, dependants,"
                        " parent_column, exempt_column, notice_period::text, enabled"
                        " FROM pgretention.entity_rule ORDER BY rule_name")

    def render(rs: list[dict[str, Any]]) -> None:
        shown = [{**r, "activity": json.dumps(r["activity"]), "dependants": json.dumps(r["dependants"]),
                  "anonymise": json.dumps(r["anonymise"]) if r["anonymise"] else ""} for r in rs]
        table("entity rules", shown)

    emit(ctx, rules, render)


@entity_group.command("run")
@click.option("--rule", default=None, help="Only this rule.")
@now_option
@pass_ctx
def entity_run(ctx: Ctx, rule: str | None, ref: datetime | None) -> None:
    """Delete or anonymise expired rows in short batches (resumable; each batch audited)."""

    def step(msg: str, progress: Progress, task: TaskID) -> None:
        if " rows due" in msg:
            due = int(msg.split(": ", 1)[1].split(" ", 1)[0])
            progress.update(task, total=due, completed=0, description=msg.split(":", 1)[0])
        elif " of " in msg and " due)" in msg:
            done = int(msg.rsplit("(", 1)[1].split(" ")[2])
            progress.update(task, completed=done)

    run_job(ctx, "CALL pgretention.entity_run(p_now => %s, p_rule => %s, p_runner => 'cli')", [utc(ref), rule],
            engine="entity", label="entity rules", total=None, step=step)


@entity_group.command("plan")
@click.option("--rule", default=None)
@now_option
@pass_ctx
def entity_plan(ctx: Ctx, rule: str | None, ref: datetime | None) -> None:
    """What the next entity run would do; changes nothing."""
    found = select(ctx, "SELECT * FROM pgretention.entity_plan(%s, %s)", [utc(ref), rule])
    emit(ctx, found, lambda r: table("pgretention entity plan", r))


@entity_group.command("status")
@now_option
@pass_ctx
def entity_status(ctx: Ctx, ref: datetime | None) -> None:
    """Per rule: rows, expired, exempt, in notice, deleted and anonymised so far, last error."""
    found = select(ctx, "SELECT * FROM pgretention.entity_status(%s)", [utc(ref)])

    def render(rs: list[dict[str, Any]]) -> None:
        shown = [{"rule": r["rule_name"], "table": r["table_name"], "action": r["action"],
                  "period": r["period"], "notice": r["notice_period"] or "-", "rows": r["rows_total"],
                  "expired": r["rows_expired"], "exempt": r["rows_exempt"], "in notice": r["in_notice"],
                  "deleted": r["rows_deleted"], "anonymised": r["rows_anonymised"],
                  "dependants": r["dependants_deleted"], "batches": r["batches"],
                  "error": r["last_error"] or ""} for r in rs]
        table("pgretention entity status", shown)

    emit(ctx, found, render)


@entity_group.command("notices")
@click.option("--rule", default=None, help="Only this rule.")
@click.option("--parent", "parent_key", default=None, help="Only rows of this parent (reseller) key.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on standard output (for resellers).")
@pass_ctx
def entity_notices(ctx: Ctx, rule: str | None, parent_key: str | None, as_csv: bool) -> None:
    """Rows that will be deleted once their notice period is over, per parent (reseller)."""
    with installed(ctx) as conn:
        if rule is not None and not rows(conn, "SELECT 1 FROM pgretention.entity_rule WHERE rule_name = %s", [rule]):
            raise InvalidInput(f"entity rule {rule!r} does not exist")
        notices = rows(conn, "SELECT rule_name AS rule, parent_key, key, first_listed_at, expires_at, deletion_from"
                             " FROM pgretention.entity_notices WHERE (%s::text IS NULL OR rule_name = %s)"
                             " AND (%s::text IS NULL OR parent_key = %s)"
                             " ORDER BY rule_name, parent_key NULLS FIRST, deletion_from, key",
                             [rule, rule, parent_key, parent_key])
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rule", "parent_key", "key", "first_listed_at", "expires_at", "deletion_from"])
        for r in notices:
            writer.writerow([r["rule"], r["parent_key"] or "", r["key"], r["first_listed_at"].isoformat(),
                             r["expires_at"].isoformat(), r["deletion_from"].isoformat()])
        click.echo(buf.getvalue(), nl=False)
        return
    emit(ctx, notices, lambda rs: table("pgretention entity notices", rs))


@entity_group.command("erase")
@click.argument("rule")
@click.argument("key")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def entity_erase(ctx: Ctx, rule: str, key: str, yes: bool) -> None:
    """Erase one row now with its dependants (self-service deletion): irreversible."""
    confirm(yes, f"Erase the row with key {key} of rule {rule} and everything it owns?")
    erased = call(ctx, "SELECT pgretention.entity_erase(%s, %s)", [rule, key])
    emit(ctx, {"rule": rule, "rows": erased},
         lambda d: click.echo(f"erased {d['rows']} rows (the row and its dependants)"))


COMMANDS = (entity_group,)
