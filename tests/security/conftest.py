"""Fixtures of the security suite: the review's roles (``actors``) and a last sweep for roles left behind."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import get_server
from tests.security.fix_roles import PREFIX, actors  # noqa: F401  (fixture)


@pytest.fixture(scope="session", autouse=True)
def _no_roles_left_behind() -> Iterator[None]:
    """After the session, no role of this suite may remain (and none may be a superuser)."""
    yield
    with get_server().admin() as conn:
        left = [r[0] for r in conn.execute(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, %s)", [PREFIX]).fetchall()]
        for role in left:
            try:
                conn.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            except psycopg.Error:
                pass
