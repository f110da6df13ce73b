"""The tests' fixture plugins, one module per topic, and the report header.

``fix_db``: the server, a database per test, pgretention installed, the engines' runs;
``fix_catalog``: snapshots of the catalog, to show that something changed nothing;
``fix_crash``: statements killed at random points, the server stopped at once;
``fix_cdr``: CDR tables that the tests of several engines build on.
"""

from __future__ import annotations

import pytest

pytest_plugins = ("tests.fix_db", "tests.fix_catalog", "tests.fix_crash", "tests.fix_cdr")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from tests.fix_db import get_server

    srv = get_server()
    v = srv.versions()
    return [
        f"pgretention test server ({srv.kind}): PostgreSQL {v.get('server')}, "
        f"pg_partman {v.get('pg_partman')}, pg_cron {v.get('pg_cron')}, pgcrypto {v.get('pgcrypto')}"
    ]
