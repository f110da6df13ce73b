"""What every command module shares: the context, output, confirmation, the connection, ``--now``,
KEY=VALUE arguments and the progress of a job.

Commands print through :func:`emit` (JSON with ``--format json``, else their own rendering), ask
through :func:`confirm`, connect through :func:`installed` (one statement: :func:`call`, one query:
:func:`select`), and take a point in time through
:data:`WHEN` (``--now`` through :func:`now_option`), made UTC by :func:`utc`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pgretention.db import Conn, connect, one, rows, translated
from pgretention.errors import InvalidInput, NotInstalled

F = TypeVar("F", bound=Callable[..., Any])
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

NOTICE_PREFIX = "pgretention: "


class Ctx:
    def __init__(self, dsn: str | None, fmt: str) -> None:
        self.dsn = dsn
        self.fmt = fmt


pass_ctx = click.make_pass_decorator(Ctx)


# -- output -----------------------------------------------------------------------------------------
def json_default(o: Any) -> Any:
    """JSON for what the database returns: times as ISO 8601, numerics as numbers, the rest as text."""
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, Decimal):
        return float(o)
    return str(o)


def emit(ctx: Ctx, data: Any, render: Callable[[Any], None] | None = None) -> None:
    if ctx.fmt == "json" or render is None:
        click.echo(json.dumps(data, default=json_default, indent=2))
    else:
        render(data)


def table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A table of rows. Every title, header and cell is plain text: Rich markup in data (a hold
    reason ``[/]x``, a table name with brackets) is shown as it is, never interpreted."""
    t = Table(title=Text(title), show_lines=False)
    cols = columns or (list(rows[0].keys()) if rows else [])
    for c in cols:
        t.add_column(Text(c))
    for r in rows:
        t.add_row(*[Text("" if r.get(c) is None else str(r.get(c))) for c in cols])
    console.print(t)


def confirm(yes: bool, question: str) -> None:
    """Go on with ``--yes`` or when the user agrees at a terminal; refuse otherwise."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question} Refusing without --yes (no terminal to ask)")
    if not click.confirm(question, default=False):
        raise InvalidInput("aborted")


# -- the connection -----------------------------------------------------------------------------------
def installed(ctx: Ctx, **kw: Any) -> Conn:
    """A connection to the database of ``--dsn``, which must have pgretention installed (else exit 4)."""
    conn = connect(ctx.dsn, **kw)
    row = conn.execute("SELECT to_regclass('pgretention.managed_table')").fetchone()
    if row is None or row[0] is None:
        db = conn.execute("SELECT current_database()").fetchone()
        conn.close()
        raise NotInstalled(f"pgretention is not installed in database {db[0] if db else '?'} (run `pgretention install`)")
    return conn


def select(ctx: Ctx, query: str, params: Any = None, **kw: Any) -> list[dict[str, Any]]:
    """The rows of one query, on a connection of its own (``kw``: as for :func:`installed`)."""
    with installed(ctx, **kw) as conn:
        return rows(conn, query, params)


def call(ctx: Ctx, query: str, params: Any = None, **kw: Any) -> Any:
    """Run one statement (a call of the SQL API) on a connection of its own; its first value."""
    with installed(ctx, **kw) as conn:
        return one(conn, query, params)


# -- points in time ---------------------------------------------------------------------------------
# Every option that takes a point in time (``--now``, ``--since``, ``--until``, ...) accepts these.
WHEN = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def now_option(f: F) -> F:
    """``--now``: the reference time of a command (simulations), passed on as ``ref``."""
    return click.option(
        "--now", "ref", type=WHEN, default=None,
        help="Reference time (UTC) instead of the current time (simulations): YYYY-MM-DD, "
             "YYYY-MM-DDTHH:MM:SS or 'YYYY-MM-DD HH:MM:SS'.",
    )(f)


def utc(d: datetime | None) -> datetime | None:
    """A time given on the command line, read as UTC (``None`` stays ``None``: the server's now)."""
    return None if d is None else d.replace(tzinfo=d.tzinfo or timezone.utc)


# -- arguments ----------------------------------------------------------------------------------------
def key_value(option: str, text: str, expected: str, *, given: str | None = None, last: bool = False,
              valid: Callable[[str, str], bool] | None = None) -> tuple[str, str]:
    """Split a KEY=VALUE argument of ``option`` at its first ``=`` (``last``: at its last).

    :param expected: the form, for the one-line error (``COLUMN=KIND``).
    :param given: the whole argument as given, when ``text`` is part of it (for the error).
    :param valid: a further check of (key, value); false gives the same error.
    :raises InvalidInput: no ``=``, or ``valid`` said no.
    """
    key, sep, value = text.rpartition("=") if last else text.partition("=")
    if not sep or (valid is not None and not valid(key, value)):
        raise InvalidInput(f"invalid {option} {given if given is not None else text!r}: expected {expected}")
    return key, value


# -- jobs -------------------------------------------------------------------------------------------
Step = Callable[[str, Progress, TaskID], None]


def last_run(conn: Conn, engine: str | None = None) -> dict[str, Any] | None:
    """The newest ``job_run`` (of ``engine`` when given: the engine its summary names)."""
    found = rows(conn, "SELECT id, status, started_at, finished_at, summary, message FROM pgretention.job_run"
                       " WHERE %(engine)s::text IS NULL"
                       " OR summary OPERATOR(pg_catalog.->>) 'engine'::text OPERATOR(pg_catalog.=) %(engine)s::text"
                       " ORDER BY id DESC LIMIT 1", {"engine": engine})
    return found[0] if found else None


def fail_if_failed(run: dict[str, Any] | None) -> None:
    """Exit with status 1 when the job run failed (its document is printed already)."""
    if run and run["status"] == "failed":
        raise click.exceptions.Exit(1)


def run_job(ctx: Ctx, call: str, params: list[Any], *, engine: str | None, label: str, total: int | None,
            step: Step, keep_prefix: bool = False) -> None:
    """Call a job procedure with its notices as a progress bar; print the notices (or, with ``--format
    json``, the job run and the notices), and exit with status 1 when the run failed.

    :param step: reads each notice (without the ``pgretention:`` prefix) and moves the bar.
    :param keep_prefix: print the notices with their ``pgretention:`` prefix.
    """
    notices: list[str] = []
    # the description is a notice from the database: plain text, never Rich markup
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=ctx.fmt == "json" or not console.is_terminal) as progress:
        task = progress.add_task(label, total=total)

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            msg = diag.message_primary or ""
            notices.append(msg if keep_prefix else msg.removeprefix(NOTICE_PREFIX))
            step(msg.removeprefix(NOTICE_PREFIX), progress, task)

        with installed(ctx, statement_timeout=None, notice_handler=on_notice) as conn, translated():
            conn.execute(call, params)
            run = last_run(conn, engine)

    def render(d: dict[str, Any]) -> None:
        for n in d["messages"]:
            click.echo(n)

    emit(ctx, {"run": run, "messages": notices}, render)
    fail_if_failed(run)
