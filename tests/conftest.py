"""The tests' fixture plugins, one module per topic, and the report header.

``fix_db``: the server, a database per test, pgretention installed, the engines' runs;
``fix_catalog``: snapshots of the catalog, to show that something changed nothing;
``fix_crash``: statements killed at random points, the server stopped at once;
``fix_cdr``: CDR tables that the tests of several engines build on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

pytest_plugins = ("tests.fix_db", "tests.fix_catalog", "tests.fix_crash", "tests.fix_cdr")


def debian_release() -> str:
    """This machine's (or root filesystem's) Debian release, as /etc/os-release names it."""
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return "unknown OS"
    return fields.get("PRETTY_NAME", "unknown OS").strip('"')


@functools.cache
def partman_major() -> int:
    """The major version of the pg_partman that the tests' databases get (4 or 5)."""
    from tests.fix_db import get_server

    return int(str(get_server().versions().get("pg_partman") or "0").split(".")[0])


def pytest_report_header(config: pytest.Config) -> list[str]:
    from tests.fix_db import get_server

    srv = get_server()
    v = srv.versions()
    leg = os.environ.get("PGRETENTION_LEG", "this machine")
    return [
        f"pgretention test leg: {debian_release()} ({leg}): PostgreSQL {v.get('server')}, "
        f"pg_partman {v.get('pg_partman')}, pg_cron {v.get('pg_cron')}, pgcrypto {v.get('pgcrypto')}; "
        f"server {srv.kind}"
    ]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.partman(4)``: the test applies to that pg_partman major only; skipped on the other."""
    marker = item.get_closest_marker("partman")
    if marker is not None and partman_major() not in marker.args:
        pytest.skip(f"applies to pg_partman {' or '.join(f'{m}.x' for m in marker.args)} only;"
                    f" this server has {partman_major()}.x")
