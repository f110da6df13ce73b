"""Crash trials of the partition engine: a run killed at a random moment, the server stopped at once.

The kill trials run 3 times in the default suite and 30 times with ``-m slow`` (``make test-slow``).
"""

from __future__ import annotations

import random
import time
from datetime import datetime

import pytest
from psycopg.types.json import Jsonb

from tests.fix_crash import Victim
from tests.fix_db import DB, simulate


def _purge_fixture(db: DB, days: int = 40, rows_per_day: int = 2000) -> tuple[int, datetime]:
    """Loads ``days`` of rows ending at the load time; returns the row count and that load time (the
    expected counts are computed from it, not from a later clock)."""
    loaded_at = db.one("SELECT now()")
    simulate(db)
    db.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text',"
        " 'started_at', '1 day', %s, p_start => now() - make_interval(days => %s))",
        [Jsonb({"all": {"drop_after": "10 days"}}), days + 1],
    )
    db.execute("INSERT INTO cdr SELECT g, %s::timestamptz - make_interval(days => %s) + g * make_interval(secs => 86400.0 / %s),"
               " '+3161' || g FROM generate_series(1, %s) g", [loaded_at, days, rows_per_day, days * rows_per_day])
    db.execute("SELECT pgretention.hold_set('order', 'R-1', 'phone', '+316112345')")
    db.execute("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\"}')")
    return days * rows_per_day, loaded_at


def _check_after_recovery(db: DB, total: int, loaded_at: datetime) -> None:
    """Exact counts within retention, held row present, nothing left pending, audit chain intact."""
    with db.connect() as conn:
        conn.execute("CALL pgretention.run()")
    cutoff = db.one("SELECT date_trunc('day', now() - interval '10 days')")
    expected_kept = db.one("SELECT count(*) FROM generate_series(1, %s) g WHERE %s::timestamptz - make_interval(days => 40)"
                           " + g * make_interval(secs => 86400.0 / 2000) >= %s", [total, loaded_at, cutoff])
    assert db.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [cutoff]) == expected_kept
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s - interval '1 day'", [cutoff]) == 0
    held = db.one("SELECT count(*) FROM cdr WHERE caller = '+316112345'") + db.one(
        "SELECT count(*) FROM pgretention.hold_store WHERE row_data->>'caller' = '+316112345'")
    assert held == 1
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 0
    orphans = db.one("SELECT count(*) FROM pg_class c JOIN pgretention.partition_op o ON o.partition_name = c.relname"
                     " WHERE o.op = 'drop'")
    assert orphans == 0
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True


def _crash_purge_trial(db: DB, seed: int) -> None:
    total, loaded_at = _purge_fixture(db)
    Victim(db, "CALL pgretention.run()").start().kill_after(random.Random(seed).uniform(0.0, 0.6))
    _check_after_recovery(db, total, loaded_at)


@pytest.mark.parametrize("seed", range(3))
def test_purge_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_purge_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 130))
def test_purge_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_purge_trial(installed, seed)


def test_purge_survives_an_immediate_server_stop(installed: DB) -> None:
    cluster = installed.server.cluster
    if cluster is None:
        pytest.skip("needs the local throwaway cluster to stop it")
    total, loaded_at = _purge_fixture(installed)
    victim = Victim(installed, "CALL pgretention.run()").start()
    time.sleep(0.25)
    cluster.restart(mode="immediate")
    victim.join()
    _check_after_recovery(installed, total, loaded_at)
    assert installed.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'failed'"
                         " AND message LIKE 'interrupted%%'") <= 1
