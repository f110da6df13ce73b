"""The ``pgretention`` command line.

Every command takes ``--dsn`` (or the ``PG*`` environment / service files) and prints one-line
errors with a non-zero exit code; ``--format json`` gives machine-readable output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.table import Table

from pgretention import __version__, installer
from pgretention.db import translate
from pgretention.errors import InvalidInput, PgRetentionError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class Ctx:
    def __init__(self, dsn: str | None, fmt: str) -> None:
        self.dsn = dsn
        self.fmt = fmt


def _default(o: Any) -> Any:
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, Decimal):
        return float(o)
    return str(o)


def emit(ctx: Ctx, data: Any, render: Callable[[Any], None] | None = None) -> None:
    if ctx.fmt == "json" or render is None:
        click.echo(json.dumps(data, default=_default, indent=2))
    else:
        render(data)


def table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    t = Table(title=title, show_lines=False)
    cols = columns or (list(rows[0].keys()) if rows else [])
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
    console.print(t)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="PGRETENTION_DSN", default=None,
              help="libpq connection string or URI; default: PG* environment variables / service file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.version_option(__version__, prog_name="pgretention")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, fmt: str) -> None:
    """Database-native data retention for PostgreSQL."""
    ctx.obj = Ctx(dsn, fmt)


pass_ctx = click.make_pass_decorator(Ctx)


def confirm_or_abort(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question} Refusing without --yes (no terminal to ask)")
    if not click.confirm(question, default=False):
        raise InvalidInput("aborted")


@cli.command()
@click.option("--no-cron", is_flag=True, help="Do not schedule the pg_cron job.")
@click.option("--schedule", default=None, help="pg_cron schedule, e.g. '7 * * * *'.")
@click.option("--reference-schema", is_flag=True,
              help="Also create the reference schema crm (accounts, customers, ...) with its retention rules.")
@pass_ctx
def install(ctx: Ctx, no_cron: bool, schedule: str | None, reference_schema: bool) -> None:
    """Install pgretention (idempotent; upgrades an older catalog)."""
    rep = installer.install(ctx.dsn, with_cron=not no_cron, cron_schedule=schedule,
                            reference_schema=reference_schema)
    data = {"revision": rep.revision, "actions": rep.actions, "cron": rep.cron, "seconds": round(rep.seconds, 3)}

    def render(d: dict[str, Any]) -> None:
        for a in d["actions"] or ["nothing to do: already installed and current"]:
            click.echo(f"  {a}")
        click.echo(f"  {d['cron']}")
        click.echo(f"pgretention catalog {d['revision']} ready in {d['seconds']:.2f}s")

    emit(ctx, data, render)


@cli.command()
@pass_ctx
def upgrade(ctx: Ctx) -> None:
    """Upgrade an installed pgretention to this package's catalog and functions."""
    rep = installer.install(ctx.dsn, upgrade_only=True)
    emit(ctx, {"revision": rep.revision, "actions": rep.actions, "seconds": round(rep.seconds, 3)},
         lambda d: click.echo("\n".join(f"  {a}" for a in d["actions"]) + f"\nat revision {d['revision']}"))


@cli.command()
@click.option("--keep-tables", is_flag=True, help="Keep managed tables as plain partitioned tables.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def uninstall(ctx: Ctx, keep_tables: bool, yes: bool) -> None:
    """Remove everything pgretention created (and nothing else)."""
    confirm_or_abort(yes, "Remove pgretention and its catalog, audit log included?")
    rep = installer.uninstall(ctx.dsn, keep_tables=keep_tables)
    emit(ctx, {"actions": rep.actions, "cron": rep.cron, "seconds": round(rep.seconds, 3)},
         lambda d: click.echo("\n".join(f"  {a}" for a in d["actions"] + [d["cron"]])))


@cli.command()
@pass_ctx
def version(ctx: Ctx) -> None:
    """Versions of pgretention, its catalog, the server and the extensions."""
    info = installer.version_info(ctx.dsn)
    emit(ctx, info, lambda d: click.echo("\n".join(f"{k:18} {v}" for k, v in d.items())))


def _register_optional() -> None:
    """Commands of the engines live in their own modules."""
    from pgretention import commands

    commands.register(cli)


def main(argv: list[str] | None = None) -> None:
    _register_optional()
    try:
        code = cli.main(args=argv, prog_name="pgretention", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("pgretention: aborted")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PgRetentionError as exc:
        click.echo(f"pgretention: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except psycopg.Error as exc:
        e = translate(exc)
        click.echo(f"pgretention: error: {e}", err=True)
        sys.exit(e.exit_code)
    except UnicodeError as exc:  # an argument that is not UTF-8 (a terminal in another encoding)
        bad = InvalidInput(f"an argument is not valid UTF-8 ({exc}): check the terminal's encoding")
        click.echo(f"pgretention: error: {bad}", err=True)
        sys.exit(bad.exit_code)
    except KeyboardInterrupt:
        err_console.print("pgretention: interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main", "emit", "table", "pass_ctx", "Ctx", "confirm_or_abort", "console"]
