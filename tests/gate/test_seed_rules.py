"""Seed rules 3, 8, 14, 18 and 19 of the retention rules digest, which today's code cannot express
or enforce (issue 18). Rules 3, 8, 14 and 18 need features that do not exist yet: their tests are
written against a proposed API (named in each docstring) and fail today because it is missing."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run_entities
from tests.gate.conftest import ALICE, PHONE, UTC

# Proposed API (does not exist today; rename here if the implementation chooses other names).
PROPOSED = {
    "rectification": "rectification",     # request kind: GDPR art. 16, same deadline as the others
    "portability": "portability",         # request kind: export in a structured, machine-readable form
    "keep_erasure": "keep",               # register_subject_table(p_erasure => ...): kept under a legal duty
    "legal_duty": "p_legal_duty",         # register_subject_table: the named duty, quoted in reply and proof
    "processor": "p_processor",           # register_subject_table: rows are a tenant's end users
    "until": "p_until",                   # create_entity_rule: columns the row is kept at least until
}


@pytest.mark.xfail(strict=True, reason="rule 3: issue 18")
def test_rule_03_rectification_and_portability_requests_are_recorded_with_the_deadline(engine: DB) -> None:
    """Rule 3: rectification and portability are rights with the one-month deadline. Proposed API:
    request kinds ``rectification`` and ``portability`` for ``request_create``; fulfilling records the
    proof (a portability request exports like an access request)."""
    db = engine
    db.execute("CREATE TABLE profile (id int PRIMARY KEY, email text, name text)")
    db.execute("INSERT INTO profile VALUES (1, %s, 'Alice')", [ALICE])
    db.execute("SELECT pgretention.subject_table_register('public.profile', '{\"email\": \"email\"}')")
    received = datetime(2026, 1, 31, 9, tzinfo=UTC)
    for kind in (PROPOSED["rectification"], PROPOSED["portability"]):
        rid = db.one("SELECT pgretention.request_create(%s, %s, p_received => %s)",
                     [kind, Jsonb({"email": [ALICE]}), received])
        assert db.one("SELECT due_at FROM pgretention.subject_request WHERE id = %s", [rid]) == datetime(
            2026, 2, 28, 9, tzinfo=UTC)
        assert db.one("SELECT count(*) FROM pgretention.request_overdue('2026-03-01') WHERE id = %s", [rid]) == 1
        if kind == PROPOSED["portability"]:
            doc = db.one("SELECT pgretention.request_export(%s)", [rid])
            assert [r["id"] for r in doc["tables"]["public.profile"]] == [1]
        result = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
        assert result["status"] == "fulfilled"
        assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = %s", [f"request.{kind}"]) == 1


@pytest.mark.xfail(strict=True, reason="rule 8: issue 18")
def test_rule_08_processor_tables_answer_only_requests_of_their_tenant(engine: DB) -> None:
    """Rule 8: as processor, the provider reaches a professional customer's end users only through
    that customer. Proposed API: ``register_subject_table(..., p_tenant_column => 'tenant',
    p_processor => true)``; a request without a tenant leaves such a table alone, a request naming
    the tenant covers that tenant's rows only."""
    db = engine
    db.execute("CREATE TABLE end_user_msg (id int PRIMARY KEY, tenant text NOT NULL, recipient text);"
               "CREATE TABLE own_customer (id int PRIMARY KEY, phone text)")
    db.execute("INSERT INTO end_user_msg VALUES (1, 'acme', %s), (2, 'globex', %s), (3, 'acme', '+31600000000')",
               [PHONE, PHONE])
    db.execute("INSERT INTO own_customer VALUES (1, %s)", [PHONE])
    db.execute("SELECT pgretention.tenant_register('acme'); SELECT pgretention.tenant_register('globex')")
    db.execute(f"SELECT pgretention.subject_table_register('public.end_user_msg', '{{\"recipient\": \"phone\"}}',"
               f" p_tenant_column => 'tenant', {PROPOSED['processor']} => true)")
    db.execute("SELECT pgretention.subject_table_register('public.own_customer', '{\"phone\": \"phone\"}')")
    own = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [PHONE]})])
    db.execute("SELECT pgretention.request_fulfil(%s)", [own])
    assert db.one("SELECT count(*) FROM own_customer") == 0
    assert db.all("SELECT id FROM end_user_msg ORDER BY id") == [(1,), (2,), (3,)]
    acme = db.one("SELECT pgretention.request_create('erasure', %s, 'acme')", [Jsonb({"phone": [PHONE]})])
    db.execute("SELECT pgretention.request_fulfil(%s)", [acme])
    assert db.all("SELECT id FROM end_user_msg ORDER BY id") == [(2,), (3,)]


@pytest.mark.xfail(strict=True, reason="rule 14: issue 18")
def test_rule_14_marketing_data_kept_12_months_or_while_the_service_runs(engine: DB) -> None:
    """Rule 14: marketing data up to 12 months after collection, or as long as the service to the
    customer runs, whichever is later. Proposed API: ``create_entity_rule(..., p_until => '[{"column":
    "customer_until"}]')``: a row is due when its period from the activity columns has passed and
    every ``p_until`` time has passed."""
    db = engine
    now = datetime.now(UTC)
    db.execute("CREATE TABLE leads (id int PRIMARY KEY, email text, collected_at timestamptz NOT NULL,"
               " customer_until timestamptz)")
    rows = {
        1: (now - timedelta(days=3 * 365), now - timedelta(days=30)),   # service ended a month ago: due
        2: (now - timedelta(days=180), None),                           # collected half a year ago: kept
        3: (now - timedelta(days=3 * 365), now + timedelta(days=365)),  # service still runs: kept
        4: (now - timedelta(days=2 * 365), None),                       # no service, two years: due
    }
    for k, (collected, until) in rows.items():
        db.execute("INSERT INTO leads VALUES (%s, %s, %s, %s)", [k, f"l{k}@example.org", collected, until])
    db.execute(f"SELECT pgretention.entity_rule_create('leads', 'public.leads', 'id', '[{{\"column\": \"collected_at\"}}]',"
               f" '12 months', {PROPOSED['until']} => '[{{\"column\": \"customer_until\"}}]')")
    run_entities(db, now)
    assert db.all("SELECT id FROM leads ORDER BY id") == [(2,), (3,)]


@pytest.mark.xfail(strict=True, reason="rule 18: issue 18")
def test_rule_18_erasure_refused_where_a_legal_retention_duty_applies(engine: DB) -> None:
    """Rule 18: erasure is refused for records under a legal retention duty (tax law): the invoice is
    kept unchanged, and the reply and the proof say what was kept and why. Proposed API:
    ``register_subject_table(..., p_erasure => 'keep', p_legal_duty => '<duty>')``."""
    db = engine
    duty = "tax law: invoices are kept 7 years"
    db.execute("CREATE TABLE invoices (id int PRIMARY KEY, email text NOT NULL, name text, amount numeric);"
               "CREATE TABLE newsletter (id int PRIMARY KEY, email text)")
    db.execute("INSERT INTO invoices VALUES (10, %s, 'Alice A', 12.50)", [ALICE])
    db.execute("INSERT INTO newsletter VALUES (1, %s)", [ALICE])
    db.execute(f"SELECT pgretention.subject_table_register('public.invoices', '{{\"email\": \"email\"}}',"
               f" p_erasure => %s, {PROPOSED['legal_duty']} => %s)", [PROPOSED["keep_erasure"], duty])
    db.execute("SELECT pgretention.subject_table_register('public.newsletter', '{\"email\": \"email\"}')")
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"email": [ALICE]})])
    reply = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
    assert db.all("SELECT id, email, name, amount FROM invoices") == [(10, ALICE, "Alice A", 12.50)]
    assert db.one("SELECT count(*) FROM newsletter") == 0
    assert reply["status"] == "partially_fulfilled" and duty in str(reply), reply
    proof = db.one("SELECT result FROM pgretention.subject_request WHERE id = %s", [rid])
    assert duty in str(proof) and proof["tables"]["public.invoices"].get("kept") == 1, proof


@pytest.mark.xfail(strict=True, reason="rule 19: issue 18")
def test_rule_19_account_under_a_disclosure_order_stays_available(crm: DB) -> None:
    """Rule 19: data under a lawful disclosure order stays available. An account inactive for three
    years whose e-mail address is under the order is neither deleted by the entity engine nor
    erased by an erasure request."""
    db = crm
    db.execute("SELECT pgretention.hold_set('lawful disclosure order', 'OM-2026-118', 'email', %s)", [ALICE])
    now = datetime.now(UTC)
    run_entities(db, now)
    run_entities(db, now + timedelta(days=31))
    assert db.one("SELECT count(*) FROM crm.account WHERE email = %s", [ALICE]) == 1
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"email": [ALICE]})])
    try:
        reply = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
    except psycopg.Error as exc:  # refused: fine, as long as the data stays
        reply = {"status": "refused", "error": str(exc)}
    assert db.one("SELECT count(*) FROM crm.account WHERE email = %s", [ALICE]) == 1
    assert reply["status"] != "fulfilled", reply
