"""Crash trials of subject requests: an erasure killed at a random moment is all or nothing.

Two seeds run in the default suite, 30 with ``-m slow`` (``make test-slow``).
"""

from __future__ import annotations

import random

import pytest
from psycopg.types.json import Jsonb

from tests.fix_crash import Victim
from tests.fix_db import DB


def _crash_erasure_trial(db: DB, seed: int) -> None:
    """An erasure killed at a random point is all or nothing; fulfilled again, it completes; held rows stay."""
    db.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text,"
        " callee text', 'started_at', '1 day', %s, p_start => now() - interval '30 days')",
        [Jsonb({"all": {"drop_after": "90 days"}})])
    db.execute("INSERT INTO cdr SELECT g, now() - (g % 700) * interval '1 hour', CASE WHEN g % 3 = 0 THEN '+31611111111'"
               " ELSE '+3162' || g END, CASE WHEN g % 3 = 1 THEN '+31611111111' ELSE '+3163' || g END"
               " FROM generate_series(1, 60000) g")
    db.execute("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    db.execute("SELECT pgretention.hold_set('order', 'R-2', p_table => 'public.cdr', p_from => now() - interval '2 hours')")
    held = db.one("SELECT count(*) FROM cdr WHERE '+31611111111' IN (caller, callee) AND started_at >= now() - interval '2 hours'")
    total = db.one("SELECT count(*) FROM cdr WHERE '+31611111111' IN (caller, callee)")
    rid = db.one("SELECT pgretention.request_create('erasure', '{\"phone\": [\"+31611111111\"]}')")
    Victim(db, "SELECT pgretention.request_fulfil(%s)", [rid]).start().kill_after(random.Random(seed).uniform(0.0, 0.3))
    status = db.one("SELECT status FROM pgretention.subject_request WHERE id = %s", [rid])
    left = db.one("SELECT count(*) FROM cdr WHERE '+31611111111' IN (caller, callee)")
    assert (status, left) in (("open", total), ("partially_fulfilled", held))
    if status == "open":
        db.execute("SELECT pgretention.request_fulfil(%s)", [rid])
    assert db.one("SELECT count(*) FROM cdr WHERE '+31611111111' IN (caller, callee)") == held > 0
    assert db.one("SELECT count(*) FROM cdr") == 60000 - (total - held)
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True


@pytest.mark.parametrize("seed", range(2))
def test_erasure_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_erasure_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 230))
def test_erasure_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_erasure_trial(installed, seed)
