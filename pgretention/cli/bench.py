"""``pgretention bench``: run the benchmarks of the source checkout (``python -m benchmarks``).

The benchmarks are not part of the installed package: they live in the repository's
``benchmarks/`` directory next to ``pgretention/``. From a checkout, ``pgretention bench`` runs them
with the same Python; from an installed package it says how to get them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from pgretention.errors import InvalidInput

CHECKOUT = Path(__file__).resolve().parents[2]


def benchmarks_dir() -> Path | None:
    """The checkout's benchmarks package, when pgretention runs from a checkout."""
    path = CHECKOUT / "benchmarks"
    return path if (path / "__main__.py").is_file() and (path / "harness" / "__init__.py").is_file() else None


@click.command("bench", context_settings={"ignore_unknown_options": False})
@click.option("--scale", type=float, default=None, help="Multiplies row counts (default 0.2; 1.0 = full size).")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Run only this benchmark (purge, size, ingest, ..., scale); repeatable.")
@click.option("--dsn", "bench_dsn", default=None,
              help="Existing server to run on (the role must create databases and extensions); "
                   "default: a throwaway local cluster. The global --dsn is not used.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Directory for JSON and PNG results.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Connections loading test data in parallel.")
def bench(scale: float | None, only: tuple[str, ...], bench_dsn: str | None, out: str | None,
          jobs: int | None) -> None:
    """Run the benchmarks (figures, targets PASS/MISS, JSON in benchmarks/results)."""
    if benchmarks_dir() is None:
        raise InvalidInput(
            "the benchmarks are part of the source repository, not of the installed package: clone the "
            "repository and run `make bench` (or `python -m benchmarks --scale 0.2`) in the checkout")
    args = [sys.executable, "-m", "benchmarks"]
    if scale is not None:
        args += ["--scale", repr(scale)]
    for name in only:
        args += ["--only", name]
    if bench_dsn:
        args += ["--dsn", bench_dsn]
    if out:
        args += ["--out", str(Path(out).resolve())]
    if jobs:
        args += ["--jobs", str(jobs)]
    code = subprocess.call(args, cwd=CHECKOUT)
    if code:
        raise click.exceptions.Exit(code)


COMMANDS = (bench,)
