"""Nothing is removed before its time (findings 9 and 10, issue 18): a simulated future reference
time is refused on every destructive path, and an ambiguous local time is never read as the
earlier of its two instants."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, run
from tests.gate.conftest import PHONE, UTC, create_sms


def test_09_request_fulfil_refuses_a_future_reference_time(engine: DB) -> None:
    """Without simulated time, ``request fulfil --now <90 days ahead>`` is refused as
    ``run --now`` is: the subject's rows, held until 60 days from now, stay."""
    db = engine
    db.simulate = False  # the CLI's sessions below do not simulate
    create_sms(db, age_days=5)
    db.execute("SELECT pgretention.subject_table_register('public.sms', '{\"caller\": \"phone\"}')")
    db.execute("SELECT pgretention.hold_set('order', 'ORD-1', 'phone', %s, p_ends_at => now() + interval '60 days')",
               [PHONE])
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [PHONE]})])
    future = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S")
    refused = db.cli("run", "--now", future)
    assert refused.returncode != 0 and "in the future" in refused.stderr
    res = db.cli("request", "fulfil", str(rid), "--now", future)
    assert db.one("SELECT count(*) FROM sms WHERE caller = %s", [PHONE]) == 5, res.stdout
    fulfilled_at = db.one("SELECT fulfilled_at FROM pgretention.subject_request WHERE id = %s", [rid])
    assert fulfilled_at is None or fulfilled_at <= datetime.now(UTC), fulfilled_at


def _last_dst_end() -> date:
    """The most recent end of summer time in the EU (last Sunday of October, already past)."""
    today = datetime.now(UTC).date()
    year = today.year if today >= date(today.year, 11, 1) else today.year - 1
    d = date(year, 10, 31)
    return d - timedelta(days=(d.weekday() + 1) % 7)


@pytest.mark.xfail(strict=True, reason="finding 10: issue 18")
def test_10_ambiguous_local_time_in_a_default_partition_is_not_deleted_early(engine: DB) -> None:
    """A ``timestamp`` row at 02:15 on the night summer time ends (Europe/Amsterdam) may be the second
    02:15 (01:15 UTC). A run at 00:30 UTC the next day, when that row is 23 h 15 min old, keeps it
    (drop_after 1 day); an unambiguous row a day old goes."""
    db = engine
    night = _last_dst_end()
    db.execute("SELECT pgretention.table_create('public.dst', 'id bigint, t timestamp, who text', 't', '1 month', %s,"
               " p_time_zone => 'Europe/Amsterdam', p_start => %s)",
               [Jsonb({"all": {"drop_after": "1 day"}}), date(night.year, 11, 1)])
    db.execute("INSERT INTO dst VALUES (1, %s, 'ambiguous'), (2, %s, 'a day old')",
               [f"{night} 02:15", f"{night} 01:59"])
    assert db.one("SELECT count(*) FROM dst_default") == 2
    run(db, datetime.combine(night + timedelta(days=1), datetime.min.time(), UTC) + timedelta(minutes=30))
    assert db.all("SELECT id FROM dst ORDER BY id") == [(1,)]
