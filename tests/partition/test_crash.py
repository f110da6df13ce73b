"""Reliability and security: crash trials, search_path attacks, clock moving backwards.

The crash trials run 3 times in the default suite and 30 times with ``-m slow`` (``make test-slow``).
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_crash import Victim
from tests.fix_db import DB

UTC = timezone.utc


def _purge_fixture(db: DB, days: int = 40, rows_per_day: int = 2000) -> int:
    db.execute("SELECT pgretention.set_setting('allow_future_reference_time', 'on')")
    db.execute(
        "SELECT pgretention.create_table('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text',"
        " 'started_at', '1 day', %s, p_start => now() - make_interval(days => %s))",
        [Jsonb({"all": {"drop_after": "10 days"}}), days + 1],
    )
    db.execute("INSERT INTO cdr SELECT g, now() - make_interval(days => %s) + g * make_interval(secs => 86400.0 / %s),"
               " '+3161' || g FROM generate_series(1, %s) g", [days, rows_per_day, days * rows_per_day])
    db.execute("SELECT pgretention.hold_set('order', 'R-1', 'phone', '+316112345')")
    db.execute("SELECT pgretention.register_subject_table('public.cdr', '{\"caller\": \"phone\"}')")
    return days * rows_per_day


def _check_after_recovery(db: DB, total: int) -> None:
    """Exact counts within retention, held row present, nothing left pending, audit chain intact."""
    with db.connect() as conn:
        conn.execute("CALL pgretention.run()")
    cutoff = db.one("SELECT date_trunc('day', now() - interval '10 days')")
    expected_kept = db.one("SELECT count(*) FROM generate_series(1, %s) g WHERE now() - make_interval(days => 40)"
                           " + g * make_interval(secs => 86400.0 / 2000) >= %s", [total, cutoff])
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
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


def _crash_purge_trial(db: DB, seed: int) -> None:
    total = _purge_fixture(db)
    Victim(db, "CALL pgretention.run()").start().kill_after(random.Random(seed).uniform(0.0, 0.6))
    _check_after_recovery(db, total)


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
    total = _purge_fixture(installed)
    victim = Victim(installed, "CALL pgretention.run()").start()
    time.sleep(0.25)
    cluster.restart(mode="immediate")
    victim.join()
    _check_after_recovery(installed, total)
    assert installed.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'failed'"
                         " AND message LIKE 'interrupted%%'") <= 1


def test_search_path_attack_by_unprivileged_role(installed: DB) -> None:
    """Look-alike functions and tables in the attacker's schema never run inside pgretention code."""
    db = installed
    db.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN"
               " CREATE ROLE mallory LOGIN; END IF; END$$;"
               "CREATE SCHEMA evil AUTHORIZATION mallory; GRANT pgretention_operator TO mallory;"
               "CREATE TABLE public.loot (what text); GRANT INSERT ON public.loot TO mallory")
    try:
        db.execute("SELECT pgretention.create_table('public.cdr', 'id bigint, started_at timestamptz', 'started_at',"
                   " '1 day', '{\"all\": {\"drop_after\": \"1 day\"}}', p_start => now() - interval '5 days')")
        with psycopg.connect(db.dsn_as("mallory"), autocommit=True) as m:
            for name, args, ret in [("format", "text, VARIADIC text[]", "text"), ("now", "", "timestamptz"),
                                    ("set_config", "text, text, boolean", "text"), ("hashtext", "text", "int"),
                                    ("quote_ident", "text", "text"), ("to_regclass", "text", "regclass")]:
                m.execute(f"CREATE FUNCTION evil.{name}({args}) RETURNS {ret} LANGUAGE plpgsql AS"  # noqa: S608 - fixed names
                          " $f$BEGIN INSERT INTO public.loot VALUES ('hijacked'); RETURN NULL; END$f$")
            m.execute("CREATE TABLE evil.managed_table (id int); CREATE TABLE evil.setting (name text, value text)")
            m.execute("SET search_path = evil, public, pg_catalog")
            m.execute("CALL pgretention.run()")
            m.execute("SELECT * FROM pgretention.status()")
            m.execute("SELECT * FROM pgretention.plan()")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("SELECT pgretention.set_setting('lock_timeout', '1h')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("UPDATE pgretention.audit_log SET outcome = 'x'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute("SELECT key FROM pgretention.anon_key")
        assert db.one("SELECT count(*) FROM public.loot") == 0
        assert db.one("SELECT value FROM pgretention.setting WHERE name = 'lock_timeout'") == "20ms"
        assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") >= 3
    finally:
        db.execute("DROP SCHEMA evil CASCADE; DROP TABLE public.loot; DROP OWNED BY mallory; DROP ROLE mallory")


def test_clock_moving_backwards_deletes_nothing_early(installed: DB) -> None:
    """A run at a later reference time, then one at an earlier time: the second removes nothing more."""
    db = installed
    db.execute("SELECT pgretention.set_setting('allow_future_reference_time', 'on')")
    start = datetime.now(UTC) - timedelta(days=20)
    db.execute("SELECT pgretention.create_table('public.cdr', 'id bigint, started_at timestamptz', 'started_at',"
               " '1 day', '{\"all\": {\"drop_after\": \"10 days\"}}', p_start => %s)", [start])
    db.execute("INSERT INTO cdr SELECT g, %s + g * interval '1 hour' FROM generate_series(1, 480) g", [start])
    with db.connect() as conn:
        conn.execute("CALL pgretention.run(%s)", [start + timedelta(days=15)])
        after_first = db.one("SELECT count(*) FROM cdr")
        conn.execute("CALL pgretention.run(%s)", [start + timedelta(days=12)])  # the clock went back 3 days
    assert db.one("SELECT count(*) FROM cdr") == after_first
    assert db.one("SELECT min(started_at) FROM cdr") >= start + timedelta(days=4)


def _crash_erasure_trial(db: DB, seed: int) -> None:
    """An erasure killed at a random point is all or nothing; fulfilled again, it completes; held rows stay."""
    db.execute(
        "SELECT pgretention.create_table('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text,"
        " callee text', 'started_at', '1 day', %s, p_start => now() - interval '30 days')",
        [Jsonb({"all": {"drop_after": "90 days"}})])
    db.execute("INSERT INTO cdr SELECT g, now() - (g % 700) * interval '1 hour', CASE WHEN g % 3 = 0 THEN '+31611111111'"
               " ELSE '+3162' || g END, CASE WHEN g % 3 = 1 THEN '+31611111111' ELSE '+3163' || g END"
               " FROM generate_series(1, 60000) g")
    db.execute("SELECT pgretention.register_subject_table('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
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
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


@pytest.mark.parametrize("seed", range(2))
def test_erasure_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_erasure_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 230))
def test_erasure_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_erasure_trial(installed, seed)
