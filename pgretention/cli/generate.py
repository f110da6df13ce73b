"""``pgretention generate``: fill a table with realistic CDR, SMS or e-mail log rows (pgretention.generator)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import click

from pgretention import generator
from pgretention.cli.face import Ctx, emit, pass_ctx
from pgretention.db import build_conninfo, translated
from pgretention.errors import InvalidInput


@click.command("generate")
@click.argument("table_name")
@click.option("--days", required=True, type=click.IntRange(min=1), help="Number of days of data.")
@click.option("--rows-per-day", required=True, type=click.IntRange(min=1), help="Rows per day (exact).")
@click.option("--start", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First UTC day (default: the last DAYS days up to today).")
@click.option("--kind", type=click.Choice(generator.KINDS), default=None,
              help="What sender/recipient hold (default: from the columns).")
@click.option("--time-column", default=None, help="Default: the managed table's time column.")
@click.option("--late-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of rows with a timestamp 1 to --late-max-days days early.")
@click.option("--late-max-days", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--null-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of rows with a NULL timestamp.")
@click.option("--tenants", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--first-id", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Loaders in parallel.")
@pass_ctx
def generate(ctx: Ctx, table_name: str, days: int, rows_per_day: int, start: datetime | None, kind: str | None,
             time_column: str | None, late_fraction: float, late_max_days: int, null_fraction: float, tenants: int,
             first_id: int, seed: int, jobs: int) -> None:
    """Generate DAYS x ROWS-PER-DAY rows of CDRs / SMS / e-mail logs into TABLE_NAME, on the server."""
    if start is None:
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=days - 1)
    else:
        first = start.replace(tzinfo=timezone.utc)
    opts = generator.Options(late_fraction=late_fraction, late_max_days=late_max_days, null_fraction=null_fraction,
                             tenants=tenants, seed=seed)
    try:
        opts.check()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    with translated():
        try:
            res = generator.load(build_conninfo(ctx.dsn), table_name, first, days, rows_per_day, kind=kind,
                                 time_column=time_column, options=opts, first_id=first_id, jobs=jobs)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
    data = {"table": table_name, "rows": res.rows, "first_id": res.first_id, "last_id": res.last_id,
            "from": first.date().isoformat(), "days": days, "seconds": round(res.seconds, 3),
            "rows_per_second": round(res.rows_per_second)}
    emit(ctx, data, lambda d: click.echo(
        f"generated {d['rows']:,} rows into {d['table']} ({d['days']} days from {d['from']}, ids {d['first_id']}"
        f"-{d['last_id']}) in {d['seconds']:.1f}s, {d['rows_per_second']:,} rows/s"))


COMMANDS = (generate,)
