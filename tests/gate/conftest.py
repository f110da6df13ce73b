"""Fixtures and helpers of the gate suite: data under a legal hold is never lost, erasure is never
reported done while data is left, nothing is removed before its time."""

from __future__ import annotations

from datetime import timezone
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgretention import installer
from tests.fix_db import DB

UTC = timezone.utc
PHONE = "+31612345678"
ALICE = "alice@example.org"




@pytest.fixture
def crm(engine: DB) -> DB:
    """The reference schema; account 1 inactive for three years, with a contact; its e-mail and id
    registered as identifiers."""
    installer.install(engine.dsn, with_cron=False, reference_schema=True)
    engine.execute("INSERT INTO crm.account (id, name, email, phone, created_at, last_login_at) VALUES"
                   " (1, 'Alice', %s, %s, now() - interval '4 years', now() - interval '3 years')", [ALICE, PHONE])
    engine.execute("INSERT INTO crm.contact (account_id, name, email) VALUES (1, 'c1', 'c1@example.org')")
    engine.execute("SELECT pgretention.subject_table_register('crm.account', %s)",
                   [Jsonb({"email": "email", "phone": "phone", "id": "account"})])
    return engine



def create_sms(db: DB, *, rows: int = 5, age_days: int = 35, start_days: int = 40) -> str:
    """The review's common setup: daily partitions kept 30 days, ``rows`` SMS of one subject sent
    ``age_days`` ago (one partition). Returns the partition holding them."""
    db.execute(
        "SELECT pgretention.table_create('public.sms', 'id bigint, sent_at timestamptz, caller text', 'sent_at',"
        " '1 day', %s, p_start => date_trunc('day', now()) - make_interval(days => %s))",
        [Jsonb({"all": {"drop_after": "30 days"}}), start_days])
    db.execute("INSERT INTO sms SELECT g, now() - make_interval(days => %s) + g * interval '1 minute', %s"
               " FROM generate_series(1, %s) g", [age_days, PHONE, rows])
    leaf = db.one("SELECT DISTINCT tableoid::regclass::text FROM sms")
    assert isinstance(leaf, str) and leaf.startswith("sms_p"), leaf
    return leaf


def surviving(db: DB, table: str, where: str = "true", params: Any = None, *, partition: str | None = None) -> int:
    """Rows matching ``where`` that still exist: in the live table, kept in the hold store, or in
    ``partition`` when it survives detached (kept, not dropped)."""
    schema, name = table.split(".")
    cond = sql.SQL(where)  # test-owned literal conditions only
    live = db.one(sql.SQL("SELECT count(*) FROM {}.{} t WHERE ").format(sql.Identifier(schema), sql.Identifier(name))
                  + cond, params)
    stored = db.one(sql.SQL("SELECT count(*) FROM pgretention.hold_store h CROSS JOIN LATERAL"
                            " jsonb_populate_record(NULL::{}.{}, h.row_data) t"
                            " WHERE h.table_schema = {} AND h.table_name = {} AND ").format(
        sql.Identifier(schema), sql.Identifier(name), sql.Literal(schema), sql.Literal(name)) + cond, params)
    detached = 0
    if partition is not None and db.one(
            "SELECT to_regclass(%s) IS NOT NULL AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass(%s))",
            [f"{schema}.{partition}", f"{schema}.{partition}"]):
        detached = db.one(sql.SQL("SELECT count(*) FROM {}.{} t WHERE ").format(
            sql.Identifier(schema), sql.Identifier(partition)) + cond, params)
    return int(live) + int(stored) + int(detached)


def audit_ids(db: DB, action: str, where: str = "true", params: Any = None) -> list[int]:
    """Ids of audit records of ``action`` (in the order they were written)."""
    return [r[0] for r in db.all(sql.SQL("SELECT id FROM pgretention.audit_log WHERE action = {} AND ").format(
        sql.Literal(action)) + sql.SQL(where) + sql.SQL(" ORDER BY id"), params)]
