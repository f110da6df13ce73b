"""Setting pgretention up: ``install``, ``upgrade``, ``uninstall``, ``version``."""

from __future__ import annotations

from typing import Any

import click

from pgretention import installer
from pgretention.cli.face import Ctx, confirm, emit, pass_ctx


@click.command()
@click.option("--no-cron", is_flag=True, help="Do not schedule the pg_cron job.")
@click.option("--schedule", default=None, help="pg_cron schedule, e.g. '7 * * * *'.")
@click.option("--reference-schema", is_flag=True,
              help="Also create the reference schema crm (accounts, customers, ...) with its retention rules.")
@click.option("--check", is_flag=True,
              help="Change nothing: list what the connecting role lacks to install (and the grants that give it).")
@click.option("--for-table", "for_tables", multiple=True, metavar="TABLE",
              help="With --check: also check that pgretention may act on this table (repeatable).")
@pass_ctx
def install(ctx: Ctx, no_cron: bool, schedule: str | None, reference_schema: bool, check: bool,
            for_tables: tuple[str, ...]) -> None:
    """Install pgretention (idempotent; upgrades an older catalog). --check: the preflight."""
    if check or for_tables:
        missing = installer.preflight(ctx.dsn, tables=for_tables)
        data_m = [{"missing": m.what, "fix": m.fix, "by": m.by} for m in missing]

        def render_m(d: list[dict[str, str]]) -> None:
            if not d:
                click.echo("preflight: nothing missing; this role may install pgretention here")
            for m in d:
                click.echo(f"missing: {m['missing']}\n  fix (as {m['by']}): {m['fix']}")

        emit(ctx, data_m, render_m)
        if missing:
            raise SystemExit(3)
        return
    rep = installer.install(ctx.dsn, with_cron=not no_cron, cron_schedule=schedule,
                            reference_schema=reference_schema)
    data = {"revision": rep.revision, "actions": rep.actions, "notes": rep.notes, "cron": rep.cron,
            "seconds": round(rep.seconds, 3)}

    def render(d: dict[str, Any]) -> None:
        for a in d["actions"] or ["nothing to do: already installed and current"]:
            click.echo(f"  {a}")
        for n in d["notes"]:
            click.echo(f"  note: {n}")
        click.echo(f"  {d['cron']}")
        click.echo(f"pgretention catalog {d['revision']} ready in {d['seconds']:.2f}s")

    emit(ctx, data, render)


@click.command()
@pass_ctx
def upgrade(ctx: Ctx) -> None:
    """Upgrade an installed pgretention to this package's catalog and functions."""
    rep = installer.install(ctx.dsn, upgrade_only=True)
    emit(ctx, {"revision": rep.revision, "actions": rep.actions, "notes": rep.notes, "seconds": round(rep.seconds, 3)},
         lambda d: click.echo("\n".join([f"  {a}" for a in d["actions"]] + [f"  note: {n}" for n in d["notes"]])
                              + f"\nat revision {d['revision']}"))


@click.command()
@click.option("--keep-tables", is_flag=True, help="Keep managed tables as plain partitioned tables.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def uninstall(ctx: Ctx, keep_tables: bool, yes: bool) -> None:
    """Remove everything pgretention created (and nothing else)."""
    confirm(yes, "Remove pgretention and its catalog, audit log included?")
    rep = installer.uninstall(ctx.dsn, keep_tables=keep_tables)
    emit(ctx, {"actions": rep.actions, "cron": rep.cron, "seconds": round(rep.seconds, 3)},
         lambda d: click.echo("\n".join(f"  {a}" for a in d["actions"] + [d["cron"]])))


@click.command()
@pass_ctx
def version(ctx: Ctx) -> None:
    """Versions of pgretention, its catalog, the server and the extensions."""
    info = installer.version_info(ctx.dsn)
    emit(ctx, info, lambda d: click.echo("\n".join(f"{k:18} {v}" for k, v in d.items())))


COMMANDS = (install, upgrade, uninstall, version)
