"""Identifiers and class members compared by the column's type (findings 1 and 8, issue 18).

Holds, erasure, access and restriction compare a registered column with the normalised value as text
today: ``inet::text`` is ``10.0.0.1/32`` and never equals ``10.0.0.1``, and a ``uuid`` value typed in
upper case never equals the column's lower-case text. ``assign_member`` stores the value as typed.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run
from tests.gate.conftest import PHONE, surviving

IP = "10.0.0.1"
ACCOUNT = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
def sessions(engine: DB) -> DB:
    """Sessions 50 days old (daily partitions, kept 30 days) of one IP, one phone and one account."""
    engine.execute(
        "SELECT pgretention.table_create('public.sess', 'id bigint, started_at timestamptz, ip inet, phone text,"
        " account uuid', 'started_at', '1 day', %s, p_start => now() - interval '60 days')",
        [Jsonb({"all": {"drop_after": "30 days"}})])
    engine.execute("INSERT INTO sess SELECT g, now() - interval '50 days' + g * interval '1 minute', %s, %s, %s"
                   " FROM generate_series(1, 10) g", [IP, PHONE, ACCOUNT])
    engine.execute("SELECT pgretention.subject_table_register('public.sess', %s)",
                   [Jsonb({"ip": "ip", "phone": "phone", "account": "account"})])
    return engine


@pytest.mark.xfail(strict=True, reason="finding 1: issue 18")
def test_01_hold_on_an_inet_column_keeps_the_rows(sessions: DB) -> None:
    """A disclosure order on an IP address keeps that address's sessions when their partition expires."""
    db = sessions
    db.execute("SELECT pgretention.hold_set('court order', 'ORD-1', 'ip', %s)", [IP])
    assert run(db)["status"] == "ok"
    assert surviving(db, "public.sess", "t.ip = %s::inet", [IP]) == 10
    kept = db.one("SELECT sum((details ->> 'rows_kept_under_hold')::int) FROM pgretention.audit_log"
                  " WHERE action = 'partition.drop'")
    assert kept == 10


@pytest.mark.xfail(strict=True, reason="finding 1: issue 18")
def test_01_hold_on_an_upper_case_uuid_keeps_the_rows(sessions: DB) -> None:
    """An account hold typed in upper case covers the account's rows in a ``uuid`` column."""
    db = sessions
    db.execute("SELECT pgretention.hold_set('court order', 'ORD-2', 'account', %s)", [ACCOUNT.upper()])
    assert run(db)["status"] == "ok"
    assert surviving(db, "public.sess", "t.account = %s::uuid", [ACCOUNT]) == 10


@pytest.mark.xfail(strict=True, reason="finding 1: issue 18")
def test_01_erasure_of_an_ip_address_erases_or_is_not_fulfilled(sessions: DB) -> None:
    """Erasure by IP address removes the rows; it is never 'fulfilled' with the rows still there."""
    db = sessions
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"ip": [IP]})])
    result = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
    left = db.one("SELECT count(*) FROM sess WHERE ip = %s::inet", [IP])
    assert (result["status"], left) == ("fulfilled", 0), result
    assert result["tables"]["public.sess"]["deleted"] == 10


@pytest.mark.xfail(strict=True, reason="finding 1: issue 18")
def test_01_access_request_by_uuid_finds_the_rows(sessions: DB) -> None:
    """An access request for an account in upper case exports the account's rows."""
    db = sessions
    rows = db.all("SELECT table_name FROM pgretention.subject_rows(%s)", [Jsonb({"account": [ACCOUNT.upper()]})])
    assert len(rows) == 10


@pytest.mark.xfail(strict=True, reason="finding 1: issue 18")
def test_01_restricted_ip_is_hidden_from_the_unrestricted_view(sessions: DB) -> None:
    """After a restriction request for an IP, the application's view no longer shows its rows."""
    db = sessions
    db.execute("SELECT pgretention.restriction_view_create('public.sess')")
    rid = db.one("SELECT pgretention.request_create('restriction', %s)", [Jsonb({"ip": [IP]})])
    db.execute("SELECT pgretention.request_fulfil(%s)", [rid])
    assert db.one("SELECT count(*) FROM sess_unrestricted WHERE ip = %s::inet", [IP]) == 0


# -- finding 8: assign_member with a value not in canonical form ------------------------------------
@pytest.fixture
def tenants(engine: DB) -> DB:
    """Events of tenant 7 (int class column) in class short (30 days); the default class keeps a year."""
    engine.execute(
        "SELECT pgretention.table_create('public.ev', 'id bigint, tenant int, t timestamptz, who text', 't', '1 day',"
        " %s, p_class_column => 'tenant', p_default_class => 'long',"
        " p_start => date_trunc('day', now()) - interval '40 days')",
        [Jsonb({"short": {"drop_after": "30 days"}, "long": {"drop_after": "365 days"}})])
    engine.execute("SELECT pgretention.member_assign('public.ev', '7', 'short')")
    engine.execute("INSERT INTO ev SELECT g, 7, now() - interval '35 days' + g * interval '1 minute', 'x'"
                   " FROM generate_series(1, 10) g")
    return engine


@pytest.mark.xfail(strict=True, reason="finding 8: issue 18")
def test_08_assign_member_007_moves_tenant_7_or_fails(tenants: DB) -> None:
    """``assign_member('007', 'long')`` for int tenant 7 moves tenant 7 (its rows are then kept a
    year), or fails; it never answers 'reassigned' while nothing changed."""
    db = tenants
    try:
        answer = db.one("SELECT pgretention.member_assign('public.ev', '007', 'long')")
    except psycopg.Error:  # refused: acceptable, as long as nothing claims a move
        assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'member.assign'"
                      " AND details ->> 'to' = 'long'") == 0
        return
    classes = db.all("SELECT value, class_name FROM pgretention.class_member")
    assert classes == [("7", "long")], (answer, classes)
    assert run(db)["status"] == "ok"
    assert db.one("SELECT count(*) FROM ev WHERE tenant = 7") == 10

