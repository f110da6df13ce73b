"""Data outside the live partitions (findings 16 and 17, issue 19): archived partitions and a
partition detached by hand are still the class's data; the report, subject requests and erasure
reach them."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run
from tests.report.conftest import (
    assert_clean,
    check_exit,
    findings,
    heartbeat,
    metric_sum,
    metrics,
    violations,
)

PHONE = "+31612345678"


def _sms(db: DB, **kw: object) -> str:
    """public.sms kept 30 days (daily partitions), 5 SMS of one subject 35 days old; their partition."""
    db.execute("SELECT pgretention.table_create('public.sms', 'id bigint, sent_at timestamptz, caller text', 'sent_at',"
               " '1 day', %s, p_start => date_trunc('day', now()) - interval '40 days'"
               + "".join(f", {k} => %s" for k in kw) + ")", [Jsonb({"all": {"drop_after": "30 days"}}), *kw.values()])
    db.execute("INSERT INTO sms SELECT g, now() - interval '35 days' + g * interval '1 minute', %s"
               " FROM generate_series(1, 5) g", [PHONE])
    db.execute("SELECT pgretention.subject_table_register('public.sms', '{\"caller\": \"phone\"}')")
    return str(db.one("SELECT DISTINCT tableoid::regclass::text FROM sms"))


@pytest.fixture
def archived(reporting: DB) -> DB:
    """on_expiry = archive: the run moved the expired partition with the subject's 5 rows to schema arch."""
    reporting.execute("CREATE SCHEMA arch")
    partition = _sms(reporting, p_on_expiry="archive", p_archive_schema="arch")
    run(reporting)
    assert reporting.one("SELECT count(*) FROM sms") == 0
    assert reporting.one(f"SELECT count(*) FROM arch.{partition}") == 5  # noqa: S608 (test-owned name)
    return reporting


@pytest.mark.xfail(strict=True, reason="finding 16: issue 19")
def test_16_archived_rows_past_their_period_are_reported(archived: DB) -> None:
    """Rows moved to the archive schema 35 days old (30-day class) are reported where they are."""
    db = archived
    partition = db.one("SELECT tablename FROM pg_tables WHERE schemaname = 'arch'")
    assert violations(db, partition) or violations(db, "sms", pattern=r"archiv"), findings(db)
    assert check_exit(db) == 1


@pytest.mark.xfail(strict=True, reason="finding 16: issue 19")
def test_16_archived_rows_are_exported_and_erased(archived: DB) -> None:
    """An access request finds the subject's archived rows; an erasure removes them, or is not
    reported fulfilled while they are there."""
    db = archived
    assert db.one("SELECT count(*) FROM pgretention.subject_rows(%s)", [Jsonb({"phone": [PHONE]})]) == 5
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [PHONE]})])
    result = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
    archived_left = sum(int(db.one(f"SELECT count(*) FROM arch.{t} WHERE caller = %s", [PHONE]))  # noqa: S608
                        for (t,) in db.all("SELECT tablename FROM pg_tables WHERE schemaname = 'arch'"))
    assert archived_left == 0 or result["status"] != "fulfilled", result


@pytest.mark.xfail(strict=True, reason="finding 17: issue 19")
def test_17_partition_detached_by_hand_is_reported(reporting: DB) -> None:
    """A DBA detaches a partition by hand (5 rows, 35 days old, 30-day class): the rows are still the
    table's data, past their period, and the report names them."""
    db = reporting
    heartbeat(db)
    assert_clean(db)
    partition = _sms(db)
    db.execute(f"ALTER TABLE sms DETACH PARTITION {partition}")  # noqa: S608 (test-owned name)
    run(db)
    assert db.one(f"SELECT count(*) FROM {partition}") == 5  # noqa: S608
    assert violations(db, partition) or violations(db, "public.sms", pattern=r"detach"), findings(db)
    assert check_exit(db) == 1
    assert metric_sum(metrics(db), "pgretention_findings", severity="violation") >= 1
