"""The ``pgretention`` command line.

Every command takes ``--dsn`` (or the ``PG*`` environment / service files) and prints one-line
errors with a non-zero exit code; ``--format json`` gives machine-readable output.

The root group lives here; each engine keeps its commands in a module of its own (listed in
:data:`ENGINES`, imported by name) and :mod:`pgretention.cli.face` holds what they share.
"""

from __future__ import annotations

import sys

import click
import psycopg

from pgretention import __version__, db
from pgretention.cli import (
    adopt,
    anonymiser,
    bench,
    entity,
    generate,
    partition,
    report,
    setup,
    subjects,
    tune,
)
from pgretention.cli.face import Ctx, err_console
from pgretention.db import translate
from pgretention.errors import InvalidInput, PgRetentionError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="PGRETENTION_DSN", default=None,
              help="libpq connection string or URI; default: PG* environment variables / service file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--simulate", is_flag=True, envvar="PGRETENTION_SIMULATE",
              help="Allow reference times other than the clock (--now) in this command's sessions: tests and demos "
                   "only; only the installing role may.")
@click.version_option(__version__, prog_name="pgretention")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, fmt: str, simulate: bool) -> None:
    """Database-native data retention for PostgreSQL."""
    ctx.obj = Ctx(dsn, fmt)
    db.simulate(simulate)


# one module per engine; each lists its top-level commands in COMMANDS
ENGINES = (setup, partition, tune, anonymiser, entity, subjects, adopt, report, generate, bench)
for _engine in ENGINES:
    for _command in _engine.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
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


__all__ = ["cli", "main", "ENGINES"]
