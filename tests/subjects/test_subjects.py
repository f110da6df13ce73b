"""Data-subject requests and legal holds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB, simulate

UTC = timezone.utc
ALICE = "+31612345678"
BOB = "+31687654321"


@pytest.fixture
def telco(installed: DB) -> DB:
    """A CDR table (daily partitions, 30 days), accounts, and invoices kept 10 years for tax law."""
    db = installed
    simulate(db)
    start = datetime.now(UTC) - timedelta(days=12)
    db.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, tenant text, started_at timestamptz,"
        " caller text, callee text, duration int', 'started_at', '1 day', %s, p_start => %s)",
        [Jsonb({"all": {"drop_after": "30 days"}}), start],
    )
    db.execute(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, phone text, tenant text);"
        "CREATE TABLE invoices (id bigint PRIMARY KEY, account_email text NOT NULL, name text, amount numeric NOT NULL);"
        "SELECT pgretention.tenant_register('acme');"
        "SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}',"
        " p_tenant_column => 'tenant');"
        "SELECT pgretention.subject_table_register('public.accounts', '{\"email\": \"email\", \"phone\": \"phone\"}',"
        " p_tenant_column => 'tenant');"
        "SELECT pgretention.subject_table_register('public.invoices', '{\"account_email\": \"email\"}',"
        " p_erasure => 'anonymise', p_anonymise => '{\"name\": null}', p_note => 'tax law: 10 years');"
    )
    # 12 days of calls: alice calls bob and others; others call alice; strangers call each other
    db.execute(
        "INSERT INTO cdr SELECT g, CASE WHEN g %% 3 = 0 THEN 'acme' ELSE 'other' END,"
        " now() - (g || ' hours')::interval,"
        " CASE WHEN g %% 10 = 0 THEN %s WHEN g %% 10 = 1 THEN %s ELSE '+3161000' || lpad(g::text, 4, '0') END,"
        " CASE WHEN g %% 10 = 1 THEN %s WHEN g %% 10 = 0 THEN %s ELSE '+3162000' || lpad(g::text, 4, '0') END, 60"
        " FROM generate_series(1, 280) g",
        [ALICE, BOB, ALICE, BOB],
    )
    db.execute(
        "INSERT INTO accounts VALUES (1, 'alice@example.org', %s, 'acme'), (2, 'bob@example.org', %s, 'acme'),"
        " (3, 'carol@example.org', NULL, 'other')",
        [ALICE, BOB],
    )
    db.execute("INSERT INTO invoices VALUES (10, 'alice@example.org', 'Alice A', 12.50), (11, 'bob@example.org', 'Bob B', 7.00)")
    return db


def alice_rows(db: DB) -> int:
    return int(db.one("SELECT count(*) FROM cdr WHERE %s IN (caller, callee)", [ALICE]))


def test_export_has_every_row_about_the_subject_and_nothing_else(telco: DB, tmp_path: Path) -> None:
    expected = alice_rows(telco)
    assert expected == 56  # 28 as caller, 28 as callee, over many daily partitions
    rid = telco.one("SELECT pgretention.request_create('access', %s)",
                    [Jsonb({"phone": ["0031 6 1234 5678"], "email": ["Alice@Example.org"]})])
    out = tmp_path / "export.json"
    res = telco.cli("request", "fulfil", str(rid), "--output", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    cdr = doc["tables"]["public.cdr"]
    assert len(cdr) == expected
    assert all(ALICE in (r["caller"], r["callee"]) for r in cdr)
    assert len({r["id"] for r in cdr}) == expected
    assert [r["id"] for r in doc["tables"]["public.accounts"]] == [1]
    assert [r["id"] for r in doc["tables"]["public.invoices"]] == [10]
    partitions = telco.one("SELECT count(DISTINCT tableoid) FROM cdr WHERE %s IN (caller, callee)", [ALICE])
    assert partitions >= 10
    req = telco.all("SELECT status, identifiers, result FROM pgretention.subject_request WHERE id = %s", [rid])[0]
    assert req[0] == "fulfilled" and req[1] is None
    assert req[2]["rows"]["public.cdr"] == expected
    assert ALICE not in json.dumps(telco.all("SELECT details FROM pgretention.audit_log"))


def test_tenant_scoped_export(telco: DB) -> None:
    rows = telco.all("SELECT table_name, row_data FROM pgretention.subject_rows(%s, 'acme')", [Jsonb({"phone": [ALICE]})])
    assert rows and all(r[1]["tenant"] == "acme" for r in rows)
    assert {r[0] for r in rows} == {"public.cdr", "public.accounts"}  # invoices have no tenant column


def test_erasure_keeps_held_rows_and_anonymises_statutory_records(telco: DB) -> None:
    # a disclosure order on alice for the last two days of calls
    since = datetime.now(UTC) - timedelta(days=2)
    hold = telco.one("SELECT pgretention.hold_set('criminal investigation', 'ORDER-2026-17', 'phone', %s, p_from => %s)",
                     [ALICE, since])
    held = telco.one("SELECT count(*) FROM cdr WHERE %s IN (caller, callee) AND started_at >= %s", [ALICE, since])
    assert 0 < held < alice_rows(telco)
    rid = telco.one("SELECT pgretention.request_create('erasure', %s)",
                    [Jsonb({"phone": [ALICE], "email": ["alice@example.org"]})])
    result = telco.one("SELECT pgretention.request_fulfil(%s)", [rid])
    assert result["status"] == "partially_fulfilled"
    assert "ORDER-2026-17" in result["reason"]
    alice_before = 56
    assert alice_rows(telco) == held
    # accounts have no time column: the hold on alice's number covers her account row entirely
    assert telco.one("SELECT count(*) FROM accounts WHERE id = 1") == 1
    assert telco.all("SELECT account_email, name, amount FROM invoices WHERE id = 10") == [("erased", None, 12.50)]
    # every call of alice was with bob: bob keeps exactly the held ones
    assert telco.one("SELECT count(*) FROM cdr WHERE %s IN (caller, callee)", [BOB]) == 56 - (alice_before - held)
    proof = telco.all("SELECT status, identifiers, identifier_hashes, result FROM pgretention.subject_request WHERE id = %s", [rid])[0]
    assert proof[0] == "partially_fulfilled" and proof[1] is None and len(proof[2]) == 2
    assert proof[3]["tables"]["public.cdr"]["held"] == held
    audit = json.dumps(telco.all("SELECT details FROM pgretention.audit_log WHERE action LIKE 'request.%%' OR action LIKE 'hold.%%'"))
    assert ALICE not in audit and "alice@example.org" not in audit
    telco.execute("SELECT pgretention.hold_release(%s)", [hold])


def test_subject_hold_survives_partition_drop_until_released(telco: DB) -> None:
    hold = telco.one("SELECT pgretention.hold_set('lawful disclosure order', 'ORDER-1', 'phone', %s)", [ALICE])
    total = alice_rows(telco)
    future = datetime.now(UTC) + timedelta(days=45)  # every partition of the 12 days has expired
    with telco.connect() as conn:
        conn.execute("CALL pgretention.run(%s)", [future])
    assert telco.one("SELECT count(*) FROM cdr") == 0
    kept = telco.all("SELECT row_data FROM pgretention.hold_store")
    assert len(kept) == total
    assert all(ALICE in (r[0]["caller"], r[0]["callee"]) for r in kept)
    # the subject's access request still finds them
    rows = telco.all("SELECT table_name FROM pgretention.subject_rows(%s)", [Jsonb({"phone": [ALICE]})])
    assert sum(1 for r in rows if r[0] == "held:public.cdr") == total
    drops = telco.one("SELECT sum((details->>'rows_kept_under_hold')::int) FROM pgretention.audit_log WHERE action = 'partition.drop'")
    assert drops == total
    telco.execute("SELECT pgretention.hold_release(%s)", [hold])
    with telco.connect() as conn:  # released: the kept rows go at the next run
        conn.execute("CALL pgretention.run(%s)", [future])
    assert telco.one("SELECT count(*) FROM pgretention.hold_store") == 0
    assert telco.one("SELECT details->>'rows' FROM pgretention.audit_log WHERE action = 'hold.store_purge'") == str(total)


def test_table_hold_keeps_whole_partitions(telco: DB) -> None:
    since = datetime.now(UTC) - timedelta(days=5)
    expected = telco.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [since])
    hold = telco.one("SELECT pgretention.hold_set('audit by regulator', 'REG-9', p_table => 'public.cdr', p_from => %s)", [since])
    future = datetime.now(UTC) + timedelta(days=45)
    with telco.connect() as conn:
        conn.execute("CALL pgretention.run(%s)", [future])
    left = telco.one("SELECT min(started_at) FROM cdr")
    assert left is not None and left >= since - timedelta(days=1)
    assert telco.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [since]) == expected > 100
    telco.execute("SELECT pgretention.hold_release(%s)", [hold])
    with telco.connect() as conn:
        conn.execute("CALL pgretention.run(%s)", [future])
    assert telco.one("SELECT count(*) FROM cdr") == 0


def test_restriction_view_and_lift(telco: DB) -> None:
    view = telco.one("SELECT pgretention.restriction_view_create('public.cdr')")
    assert view == "public.cdr_unrestricted"
    before = telco.one("SELECT count(*) FROM cdr_unrestricted")
    rid = telco.one("SELECT pgretention.request_create('restriction', %s)", [Jsonb({"phone": [ALICE]})])
    telco.execute("SELECT pgretention.request_fulfil(%s)", [rid])
    assert telco.one("SELECT pgretention.is_restricted('phone', %s)", [ALICE]) is True
    assert telco.one("SELECT count(*) FROM cdr_unrestricted") == before - alice_rows(telco)
    rid = telco.one("SELECT pgretention.request_create('lift_restriction', %s)", [Jsonb({"phone": [ALICE]})])
    telco.execute("SELECT pgretention.request_fulfil(%s)", [rid])
    assert telco.one("SELECT count(*) FROM cdr_unrestricted") == before


def test_due_dates_extensions_and_overdue(telco: DB) -> None:
    received = datetime(2026, 1, 31, 9, tzinfo=UTC)
    rid = telco.one("SELECT pgretention.request_create('access', %s, p_received => %s)",
                    [Jsonb({"email": ["bob@example.org"]}), received])
    assert telco.one("SELECT due_at FROM pgretention.subject_request WHERE id = %s", [rid]) == datetime(2026, 2, 28, 9, tzinfo=UTC)
    assert telco.one("SELECT count(*) FROM pgretention.request_overdue('2026-02-28 08:00')") == 0
    assert telco.one("SELECT count(*) FROM pgretention.request_overdue('2026-03-01')") == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="beyond two months"):
        telco.execute("SELECT pgretention.request_extend(%s, '2026-05-01', 'complex request')", [rid])
    telco.execute("SELECT pgretention.request_extend(%s, '2026-04-28', 'many systems involved')", [rid])
    assert telco.one("SELECT count(*) FROM pgretention.request_overdue('2026-04-01')") == 0
    assert telco.one("SELECT count(*) FROM pgretention.request_overdue('2026-04-29')") == 1
    assert telco.one("SELECT count(*) FROM pgretention.overdue_requests") == 1  # today is long past


BAD = [
    ("SELECT pgretention.request_create('erasure', '{\"phone\": [\"12-34\"]}')", "malformed phone number"),
    ("SELECT pgretention.request_create('erasure', '{\"phone\": [\"\"]}')", "empty phone identifier"),
    ("SELECT pgretention.request_create('erasure', '{}')", "identifiers must be a JSON object"),
    ("SELECT pgretention.request_create('erasure', '{\"email\": [\"not-an-address\"]}')", "malformed e-mail address"),
    ("SELECT pgretention.request_create('erasure', '{\"phone\": [\"+31612345678\"]}', 'nosuch')", "unknown tenant"),
    ("SELECT pgretention.request_create('forget', '{\"phone\": [\"+31612345678\"]}')", "unknown request kind"),
    ("SELECT pgretention.hold_set('', 'X', 'phone', '+31612345678')", "needs a reason and a reference"),
    ("SELECT pgretention.subject_table_register('public.cdr', '{\"nosuch\": \"phone\"}')", "column nosuch does not exist"),
    ("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"fax\"}')", "unknown identifier kind"),
]


@pytest.mark.parametrize("call,message", BAD, ids=[m for _, m in BAD])
def test_bad_requests_change_nothing(telco: DB, call: str, message: str) -> None:
    with telco.connect() as conn:
        before = snapshot(conn)
        counts = conn.execute("SELECT (SELECT count(*) FROM pgretention.subject_request), (SELECT count(*) FROM"
                              " pgretention.audit_log), (SELECT count(*) FROM pgretention.subject_column)").fetchone()
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(call)
        assert diff(before, snapshot(conn)) == {}
        assert conn.execute("SELECT (SELECT count(*) FROM pgretention.subject_request), (SELECT count(*) FROM"
                            " pgretention.audit_log), (SELECT count(*) FROM pgretention.subject_column)").fetchone() == counts


def test_extension_refused_beyond_two_months_changes_nothing(telco: DB) -> None:
    rid = telco.one("SELECT pgretention.request_create('access', '{\"phone\": [\"+31612345678\"]}')")
    res = telco.cli("request", "extend", str(rid), "--until", "2099-01-01", "--reason", "x")
    assert res.returncode == 6 and "beyond two months" in res.stderr
    assert telco.one("SELECT extended_due_at FROM pgretention.subject_request WHERE id = %s", [rid]) is None


def test_bulk_requests_and_indexes_via_cli(telco: DB, tmp_path: Path) -> None:
    res = telco.cli("subject", "index", "public.cdr")
    assert res.returncode == 0, res.stderr
    leaves = telco.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.cdr'::regclass")
    indexed = telco.one("SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'cdr_p%%' AND indexname LIKE '%%caller_pgr_idx'")
    assert indexed == leaves - 1  # every time partition (the default partition too, minus the parent)
    assert telco.one("SELECT count(*) FROM pg_indexes WHERE tablename = 'cdr' AND indexname LIKE '%%pgr_idx'") == 2
    lines = [
        {"kind": "erasure", "identifiers": {"phone": [BOB]}, "ref": "T-1"},
        {"kind": "erasure", "identifiers": {"phone": ["nonsense"]}},
        {"kind": "access", "identifiers": {"email": ["carol@example.org"]}, "tenant": "acme"},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = telco.cli("request", "bulk", str(path), "--fulfil")
    assert res.returncode == 0, res.stderr
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [o["ok"] for o in out] == [True, False, True]
    assert "malformed phone number" in out[1]["error"]
    assert out[0]["result"]["status"] == "fulfilled"
    assert telco.one("SELECT count(*) FROM cdr WHERE %s IN (caller, callee)", [BOB]) == 0
    assert telco.one("SELECT count(*) FROM pgretention.subject_request") == 2


def test_rows_without_identifiers_are_not_held(telco: DB) -> None:
    """A subject hold keeps that subject's rows only: an expired row with NULL numbers still goes."""
    telco.execute("SELECT pgretention.hold_set('order', 'ORDER-5', 'phone', %s)", [ALICE])
    telco.execute("INSERT INTO cdr (id, started_at, caller, callee) VALUES (-1, '2001-01-01', NULL, NULL),"
                  " (-2, '2001-01-01', %s, NULL)", [ALICE])
    with telco.connect() as conn:
        conn.execute("CALL pgretention.run()")
    assert [r[0] for r in telco.all("SELECT id FROM cdr WHERE id < 0")] == [-2]
    assert telco.one("SELECT count(*) FROM pgretention.report_findings(now()) WHERE severity = 'violation'"
                     " AND message LIKE '%%default partition%%'") == 0
