"""Misleading messages (finding 25, issue 19): what the report, the run's notices, the erasure proof
and the CLI help say must match what happened."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB
from tests.report.conftest import findings

UTC = timezone.utc
ALICE, BOB = "+31612345678", "+31687654321"


def _run_notices(db: DB, at: datetime | None = None) -> list[str]:
    """The notices of one run."""
    notices: list[str] = []
    with db.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [at])
    return notices


def _sms(db: DB, **kw: Any) -> None:
    db.execute("SELECT pgretention.table_create('public.sms', 'id bigint, sent_at timestamptz, caller text, callee text',"
               " 'sent_at', '1 day', %s, p_start => date_trunc('day', now()) - interval '40 days'"
               + "".join(f", {k} => %s" for k in kw) + ")", [Jsonb({"all": {"drop_after": "30 days"}}), *kw.values()])


@pytest.mark.xfail(strict=True, reason="finding 25: issue 19")
def test_25_hold_past_its_end_is_not_said_to_keep_data(reporting: DB) -> None:
    """A hold past its end date is already ignored by the engine: the report asks for its release
    without claiming that data is kept."""
    db = reporting
    _sms(db)
    db.execute("SELECT pgretention.hold_set('audit', 'REG-1', p_table => 'public.sms', p_ends_at => now() - interval '1 day')")
    about = [f for f in findings(db) if f["section"] == "legal_holds"]
    assert about, findings(db)
    assert not any("data is kept" in f["message"] for f in about), about


@pytest.mark.xfail(strict=True, reason="finding 25: issue 19")
def test_25_failed_rewrite_is_not_announced_as_anonymised(reporting: DB) -> None:
    """When every rewrite fails (the quarter's key was destroyed), no notice says 'anonymised partition'."""
    db = reporting
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    db.execute("SELECT pgretention.table_create('public.calls', 'id bigint, started_at timestamptz, caller text',"
               " 'started_at', '1 day', %s, p_start => %s)",
               [Jsonb({"all": {"drop_after": "60 days", "anonymise_after": "10 days"}}), day - timedelta(days=14)])
    db.execute("SELECT pgretention.anon_rule_set('public.calls', 'caller', 'pseudonym');"
               "SELECT pgretention.anon_rule_set('public.calls', 'id', 'keep')")
    db.execute("INSERT INTO calls SELECT g, %s::timestamptz + g * interval '1 hour', '+3161234' || g"
               " FROM generate_series(1, 48) g", [day - timedelta(days=13)])
    for d in range(9, 16):
        t = day - timedelta(days=d)
        epoch = f"{t.year}q{(t.month - 1) // 3 + 1}"
        if not db.one("SELECT count(*) FROM pgretention.anon_key WHERE epoch = %s AND destroyed_at IS NOT NULL", [epoch]):
            db.execute("SELECT pgretention.anon_key_rotate(%s)", [epoch])
            db.execute("SELECT pgretention.anon_key_destroy(%s)", [epoch])
    notices = _run_notices(db)
    assert db.one("SELECT count(*) FROM calls WHERE caller LIKE '+3161234%%'") == 48  # nothing was rewritten
    assert not [n for n in notices if "anonymised partition" in n], notices


@pytest.mark.xfail(strict=True, reason="finding 25: issue 19")
def test_25_archive_run_says_archived(reporting: DB) -> None:
    """In archive mode the run's notice says the partition was archived, not dropped."""
    db = reporting
    db.execute("CREATE SCHEMA arch")
    _sms(db, p_on_expiry="archive", p_archive_schema="arch")
    db.execute("INSERT INTO sms VALUES (1, now() - interval '35 days', %s, %s)", [ALICE, BOB])
    notices = [n for n in _run_notices(db) if "sms_p" in n]
    assert db.one("SELECT count(*) FROM pg_tables WHERE schemaname = 'arch'") > 0
    assert notices and not [n for n in notices if "dropped partition" in n], notices


@pytest.mark.xfail(strict=True, reason="finding 25: issue 19")
def test_25_erasure_proof_names_the_hold_on_the_other_party(reporting: DB) -> None:
    """Alice's calls with Bob are kept under Bob's disclosure order: the proof gives that reason."""
    db = reporting
    _sms(db)
    db.execute("SELECT pgretention.subject_table_register('public.sms', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    db.execute("INSERT INTO sms SELECT g, now() - g * interval '1 hour', %s, %s FROM generate_series(1, 4) g", [ALICE, BOB])
    db.execute("SELECT pgretention.hold_set('disclosure order', 'ORD-BOB', 'phone', %s)", [BOB])
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [ALICE]})])
    result = db.one("SELECT pgretention.request_fulfil(%s)", [rid])
    assert result["status"] == "partially_fulfilled" and result["held_rows"] == 4, result
    assert "ORD-BOB" in (result.get("reason") or ""), result


@pytest.mark.xfail(strict=True, reason="finding 25: issue 19")
def test_25_cli_hold_times_say_their_time_zone(db: DB) -> None:
    """``hold set --help`` says that --from, --to and --ends are read as UTC."""
    res = db.cli("hold", "set", "--help")
    assert res.returncode == 0
    assert "UTC" in res.stdout, res.stdout
