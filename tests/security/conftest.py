"""Fixtures of the security suite: the review's roles (``actors``, from fix_roles) and a check,
after every test, that none of its roles is left in the cluster (roles are cluster-wide: a
superuser left behind by a successful attack would sit in every later test)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fix_db import get_server
from tests.security.fix_roles import PREFIX, actors  # noqa: F401  (fixture)


def _sweep() -> list[str]:
    """Drop every role of this suite still in the cluster; returns their names."""
    with get_server().admin() as conn:
        left = [r[0] for r in conn.execute(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY 1", [PREFIX]).fetchall()]
        for role in left:
            try:
                conn.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            except psycopg.Error:
                pass
    return left


@pytest.fixture(autouse=True)
def _roles_dropped_after_test() -> Iterator[None]:
    """Set up before ``actors`` and torn down after it: its teardown must have dropped every role."""
    yield
    left = _sweep()
    assert left == [], f"roles left behind by this test (dropped now): {left}"
