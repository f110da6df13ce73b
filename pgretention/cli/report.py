"""Commands: ``report`` (compliance report), ``audit verify|show|trim`` and ``metrics``."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from pgretention import report as rep
from pgretention.cli.face import (
    WHEN,
    Ctx,
    emit,
    installed,
    json_default,
    now_option,
    pass_ctx,
    select,
    table,
    utc,
)
from pgretention.db import one, rows
from pgretention.errors import InvalidInput, PgRetentionError


def _write(path: Path, text: str) -> None:
    """Write atomically (a reader never sees half a file)."""
    path = path.expanduser()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc


@click.command("report")
@click.option("--format", "out_format", type=click.Choice(["text", "json", "html"]), default=None,
              help="Output format (default: text, or json with the global --format json).")
@click.option("--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report to this file instead of standard output.")
@now_option
@click.option("--check", is_flag=True, help="Exit with status 1 when the report has violations.")
@pass_ctx
def report_cmd(ctx: Ctx, out_format: str | None, output: Path | None, ref: datetime | None, check: bool) -> None:
    """Compliance report: promises per table and class, rows past their period, jobs, audit trail."""
    fmt = out_format or ("json" if ctx.fmt == "json" else "text")
    with installed(ctx) as conn:
        data = rep.collect(conn, ctx.dsn, utc(ref))
    if fmt == "html":
        text = rep.render_html(data)
    elif fmt == "json":
        text = json.dumps(data, default=json_default, indent=2) + "\n"
    else:
        text = ""
    if output is not None:
        if fmt == "text":
            raise InvalidInput("--output needs --format json or html")
        _write(output, text)
        s = data["summary"]
        click.echo(f"report written to {output}: {s['violations']} violation(s), {s['warnings']} warning(s)")
    elif fmt == "text":
        for title, rows in rep.text_sections(data):
            if rows:
                table(title, rows)
            else:
                click.echo(f"{title}: none")
    else:
        click.echo(text, nl=False)
    if check and data["summary"]["violations"]:
        raise PgRetentionError(f"the report has {data['summary']['violations']} violation(s)")


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@pass_ctx
def audit_verify(ctx: Ctx) -> None:
    """Walk the hash chain; name the first record that was changed, removed or moved."""
    with installed(ctx) as conn:
        row = rows(conn, "SELECT * FROM pgretention.audit_verify()")[0]

    if not row["ok"]:
        if ctx.fmt == "json":
            emit(ctx, row)
        raise PgRetentionError(f"audit log BROKEN at record {row['first_broken_id']}: {row['reason']}")
    emit(ctx, row, lambda r: click.echo(f"audit log intact: {r['records']} records verified"))


@audit_group.command("show")
@click.option("--since", type=WHEN, default=None, help="Records from this time (UTC) on.")
@click.option("--action", default=None, help="Only this action, or a prefix such as 'partition'.")
@click.option("--object", "object_", default=None, help="Only records about this object (e.g. public.cdr).")
@click.option("--limit", default=50, show_default=True, type=int, help="The newest N records.")
@pass_ctx
def audit_show(ctx: Ctx, since: datetime | None, action: str | None, object_: str | None, limit: int) -> None:
    """The newest audit records."""
    records = select(ctx, "SELECT id, at, session_role, application, action, object, details, outcome"
                          " FROM pgretention.audit_records(%s, %s, %s, %s)", [utc(since), action, object_, limit])

    def render(rs: list[dict[str, Any]]) -> None:
        if not rs:
            click.echo("no audit records")
            return
        table("pgretention audit log", [{
            "id": r["id"], "at": f"{r['at']:%Y-%m-%d %H:%M:%S}", "role": r["session_role"],
            "application": r["application"], "action": r["action"], "object": r["object"] or "",
            "details": json.dumps(r["details"], separators=(",", ":"))[:120], "outcome": r["outcome"],
        } for r in rs])

    emit(ctx, records, render)


@audit_group.command("trim")
@pass_ctx
def audit_trim(ctx: Ctx) -> None:
    """Apply the audit log's own retention (setting audit_keep, 5 years), leaving a checkpoint record.
    Always by the clock: a simulated reference time never shortens it."""
    with installed(ctx) as conn:
        removed = int(one(conn, "SELECT pgretention.audit_retention()"))
    emit(ctx, {"removed": removed},
         lambda d: click.echo(f"removed {d['removed']} audit records older than audit_keep"
                              + ("; a checkpoint record keeps the chain verifiable" if d["removed"] else "")))


@click.command("metrics")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file atomically (node_exporter textfile collector) instead of stdout.")
@pass_ctx
def metrics_cmd(ctx: Ctx, textfile: Path | None) -> None:
    """Metrics in the Prometheus text format."""
    with installed(ctx) as conn:
        text = rep.prometheus_text(conn)
    if textfile is None:
        click.echo(text, nl=False)
        return
    if not textfile.name.endswith(".prom"):
        raise InvalidInput(f"textfile {textfile} must end in .prom (the textfile collector reads only those)")
    _write(textfile, text)


COMMANDS = (report_cmd, audit_group, metrics_cmd)
