"""Property-based checks of the validators: any input gives a value or a clear error, never a crash."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1 day", "-1 day", "0", "banana", "13 months", "1e308 days", "99999999 years", "'; DROP TABLE x; --",
                     "1 day; SELECT 1", "select", "public.\"x\"", "a.b.c", "ünïcødé", "order", "", " ", "\x00"]),
)


@pytest.fixture(scope="module")
def conn(server: Any) -> Any:
    from pgretention import installer

    name = server.create_database(prefix="prop")
    installer.install(server.conninfo(name), with_cron=False)
    c = psycopg.connect(server.conninfo(name), autocommit=True)
    yield c
    c.close()
    server.drop_database(name)


def _call(conn: Any, query: str, value: str) -> Any:
    try:
        return conn.execute(query, [value]).fetchone()[0]
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.InvalidName) as exc:
        msg = str(exc).splitlines()[0]
        assert msg and ("must" in msg or "invalid" in msg or "longer than" in msg), msg
        return None
    except psycopg.DataError:  # NUL bytes cannot even be sent as text
        assert "\x00" in value
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE)
def test_interval_validation(conn: Any, value: str) -> None:
    result = _call(conn, "SELECT pgretention._parse_interval('partition interval', %s)::text", value)
    if result is not None:
        assert conn.execute("SELECT %s::interval > interval '0'", [result]).fetchone()[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE)
def test_table_name_validation(conn: Any, value: str) -> None:
    result = _call(conn, "SELECT row_to_json(pgretention._split_name(%s))::text", value)
    if result is not None:
        assert '"' not in value and ";" not in value and "'" not in value


def test_validators_left_no_trace(conn: Any) -> None:
    assert conn.execute("SELECT count(*) FROM pgretention.managed_table").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgretention.audit_log WHERE action <> 'install'").fetchone()[0] == 0

