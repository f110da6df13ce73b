"""``pgretention tune``: partition interval advice from the table's real growth (the SQL function ``tune``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click
import psycopg

from pgretention.cli.face import Ctx, emit, installed, pass_ctx, table
from pgretention.db import one, rows
from pgretention.errors import InvalidInput
from pgretention.human import age, size


def _recommendation(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    chosen = [r for r in candidates if r["table_choice"]]
    if not chosen:
        return None
    interval: timedelta = chosen[0]["candidate"]
    return {"interval": interval, "premake": max(max(r["premake"] for r in chosen),
                                                 max(r["current_premake"] for r in chosen))}


@click.command("tune")
@click.argument("table_name")
@click.option("--rows-per-day", type=click.IntRange(min=0), default=None,
              help="Rows per day of the whole table (default: observed from its last closed partitions).")
@click.option("--row-bytes", type=click.IntRange(min=1), default=None,
              help="Bytes per row on disk, indexes included (default: observed).")
@click.option("--max-overshoot", default=None, help="Longest acceptable worst-case overshoot (default '2 days').")
@click.option("--apply", "apply_", is_flag=True,
              help="Change the interval of FUTURE partitions to the recommendation (existing ones stay).")
@pass_ctx
def tune(ctx: Ctx, table_name: str, rows_per_day: int | None, row_bytes: int | None, max_overshoot: str | None,
         apply_: bool) -> None:
    """Recommend a partition interval (and premake) per class: overshoot, partition count, purge cost."""
    with installed(ctx) as conn:
        if max_overshoot is not None:
            try:
                conn.execute("SELECT %s::interval", [max_overshoot])
            except psycopg.errors.DataError as exc:
                raise InvalidInput(f"invalid --max-overshoot {max_overshoot!r}: expected an interval such as "
                                   "'2 days'") from exc
        candidates = rows(conn, "SELECT * FROM pgretention.tune(%s, %s, %s, %s::interval)",
                                [table_name, rows_per_day, row_bytes, max_overshoot])
        rec = _recommendation(candidates)
        applied: dict[str, Any] | None = None
        if apply_:
            if rec is None:
                raise InvalidInput(f"no candidate interval fits every class of {table_name} (see the table): "
                                   "nothing changed; allow a longer --max-overshoot")
            applied = one(conn, "SELECT pgretention.table_set_interval(%s, %s, %s)",
                                [table_name, f"{int(rec['interval'].total_seconds())} seconds"
                           if rec["interval"] < timedelta(days=28) else "1 month", rec["premake"]])
    data = {"table": table_name, "candidates": candidates, "recommendation": rec, "applied": applied}

    def render(d: dict[str, Any]) -> None:
        shown = [
            {
                "class": r["class_name"], "drop after": age(r["drop_after"]), "rows/day": f"{r['rows_per_day']:,}",
                "row B": r["row_bytes"], "interval": age(r["candidate"]), "premake": r["premake"],
                "worst overshoot": age(r["worst_case_overshoot"]), "partitions": r["partitions_alive"],
                "partition": f"{r['partition_rows']:,} rows, {size(r['partition_bytes'])}",
                "purge/run": f"{r['drops_per_run']} x {r['drop_ms_per_partition']} ms",
                "fits": ("" if r["fits_overshoot"] else "overshoot ") + ("" if r["fits_count"] else "count")
                or "yes",
                "": ("<- table" if r["table_choice"] else "<- class" if r["recommended"] else ""),
            }
            for r in d["candidates"]
        ]
        table(f"pgretention tune {d['table']} (rate: {d['candidates'][0]['rate_source']})", shown)
        current = d["candidates"][0]
        if d["recommendation"] is None:
            click.echo("no candidate interval fits every class: allow a longer --max-overshoot")
        else:
            click.echo(f"recommended: interval {age(d['recommendation']['interval'])}, premake "
                       f"{d['recommendation']['premake']} (now: {age(current['current_interval'])}, premake "
                       f"{current['current_premake']})")
        if d["applied"] is not None:
            a = d["applied"]
            if a.get("changed"):
                since = ", ".join(f"{k} from {v}" for k, v in (a.get("new_interval_from") or {}).items())
                click.echo(f"applied to future partitions ({since}); existing partitions keep their bounds")
            else:
                click.echo("already configured so: nothing changed")

    emit(ctx, data, render)


COMMANDS = (tune,)
