"""Engine commands (run, plan, status, tables, classes) registered on the CLI group."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    return None
