"""Anonymiser: column rules, keyed pseudonyms per epoch, rewrite-and-swap, crash safety, roll-ups."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_catalog import diff, snapshot
from tests.fix_crash import Victim
from tests.fix_db import DB, simulate

UTC = timezone.utc
COLUMNS = ("id bigint, started_at timestamptz NOT NULL, caller text, callee text, email text, cell_ip inet,"
           " content text, meta jsonb, duration int")
RULES = [("caller", "pseudonym", None), ("callee", "e164_prefix", "4"), ("email", "null", None),
         ("cell_ip", "ip_prefix", "24/48"), ("content", "redact", None), ("meta", "jsonb_drop", "imsi, imei")]


@pytest.fixture
def cdr(installed: DB) -> DB:
    db = installed
    simulate(db)
    db.execute("SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s, p_start => now() - interval '70 days')",
               [COLUMNS, Jsonb({"all": {"anonymise_after": "30 days", "drop_after": "400 days"}})])
    db.execute("CREATE INDEX ON cdr (caller); CREATE INDEX ON cdr (started_at)")
    # 60 days, 40 calls a day; the same 5 callers every day
    db.execute(
        "INSERT INTO cdr SELECT g, now() - interval '60 days' + g * interval '36 minutes',"
        " '+3161234000' || (g % 5), '+3162999' || lpad((g % 997)::text, 4, '0'),"
        " 'user' || (g % 5) || '@example.org', ('10.1.' || (g % 250) || '.' || (g % 200 + 1))::inet,"
        " 'secret message ' || g, jsonb_build_object('imsi', '20404' || g, 'imei', '35' || g, 'cell', g % 7),"
        " g % 600 FROM generate_series(1, 2400) g"
    )
    for col, method, param in RULES:
        db.execute("SELECT pgretention.anon_rule_set('public.cdr', %s, %s, %s)", [col, method, param])
    return db


def anonymise(db: DB, at: datetime | None = None) -> list[str]:
    notes: list[str] = []
    with db.connect() as conn:
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        conn.execute("CALL pgretention.anon_run(%s)", [at])
    return notes


def originals(db: DB, cutoff: datetime) -> list[tuple[Any, ...]]:
    return db.all("SELECT caller, callee, email, host(cell_ip), content, meta->>'imsi' FROM cdr WHERE started_at < %s",
                  [cutoff])


def test_rewrite_anonymises_old_partitions_only(cdr: DB) -> None:
    assert cdr.one("SELECT pgretention.anon_unruled_columns(1)") == ["id", "duration"]
    cdr.execute("SELECT pgretention.anon_rule_set('public.cdr', 'id', 'keep')")
    cdr.execute("SELECT pgretention.anon_rule_set('public.cdr', 'duration', 'keep')")
    assert cdr.one("SELECT pgretention.anon_unruled_columns(1)") == []
    cutoff = cdr.one("SELECT date_trunc('day', now() - interval '30 days')")
    before_old = originals(cdr, cutoff)
    secrets = {str(v) for row in before_old for v in row if v is not None}
    total = cdr.one("SELECT count(*) FROM cdr")
    recent = cdr.all("SELECT * FROM cdr WHERE started_at >= %s ORDER BY id", [cutoff])
    parts_before = cdr.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.cdr'::regclass")
    anonymise(cdr)
    assert cdr.one("SELECT count(*) FROM cdr") == total
    assert cdr.one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.cdr'::regclass") == parts_before
    assert cdr.all("SELECT * FROM cdr WHERE started_at >= %s ORDER BY id", [cutoff]) == recent
    # none of the original identifiers or contents appear anywhere in the anonymised rows
    dump = "\n".join(str(r[0]) for r in cdr.all("SELECT t::text FROM cdr t WHERE started_at < %s", [cutoff]))
    leaked = [s for s in secrets if s in dump]
    assert leaked == []
    row = cdr.all("SELECT caller, callee, email, host(cell_ip), content, meta FROM cdr WHERE started_at < %s LIMIT 1",
                  [cutoff])[0]
    assert row[0].startswith("p") and len(row[0]) == 25
    assert row[1] == "+3162"
    assert row[2] is None and row[3].endswith(".0") and row[4] == "[redacted]" and set(row[5]) == {"cell"}
    done = cdr.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'")
    assert done == cdr.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.anonymise'") >= 29
    # once only: a second run rewrites nothing
    anonymise(cdr)
    assert cdr.one("SELECT count(*) FROM pgretention.anon_op") == done
    # partitions keep their indexes
    leaf = cdr.one("SELECT partition_name FROM pgretention.anon_op LIMIT 1")
    assert cdr.one("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [leaf]) == 2


def test_pseudonyms_per_epoch_and_key_destruction(cdr: DB) -> None:
    anonymise(cdr)
    # the same caller has one pseudonym per quarter, a different one in the next quarter
    per_quarter = cdr.all(
        "SELECT to_char(started_at, 'YYYY\"q\"Q') q, count(DISTINCT caller) FROM cdr"
        " WHERE started_at < date_trunc('day', now() - interval '30 days') GROUP BY 1 ORDER BY 1")
    assert [r[1] for r in per_quarter] == [5] * len(per_quarter)
    if len(per_quarter) > 1:
        q1, q2 = per_quarter[0][0], per_quarter[1][0]
        same = cdr.one("SELECT count(*) FROM (SELECT DISTINCT caller FROM cdr WHERE to_char(started_at, 'YYYY\"q\"Q') = %s) a"
                       " JOIN (SELECT DISTINCT caller FROM cdr WHERE to_char(started_at, 'YYYY\"q\"Q') = %s) b USING (caller)", [q1, q2])
        assert same == 0
    epoch = cdr.one("SELECT min(epoch) FROM pgretention.anon_key")
    cdr.execute("SELECT pgretention.anon_key_destroy(%s)", [epoch])
    assert cdr.one("SELECT key FROM pgretention.anon_key WHERE epoch = %s", [epoch]) is None
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="was destroyed"):
        cdr.execute("SELECT pgretention._epoch_key(%s)", [epoch])
    assert cdr.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'key.destroy' AND object = %s", [epoch]) == 1


def test_keys_are_readable_by_the_owner_only(cdr: DB) -> None:
    anonymise(cdr)
    cdr.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops') THEN CREATE ROLE ops LOGIN; END IF;"
                " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpo') THEN CREATE ROLE dpo LOGIN; END IF; END$$;"
                "GRANT pgretention_operator TO ops; GRANT pgretention_auditor TO dpo")
    try:
        for user in ("ops", "dpo"):
            with psycopg.connect(cdr.dsn_as(user), autocommit=True) as c:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute("SELECT key FROM pgretention.anon_key")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute("SELECT pgretention._epoch_key('2026q1')")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute("SELECT key FROM pgretention.field_key")
        with psycopg.connect(cdr.dsn_as("dpo"), autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM pgretention.anon_key WHERE destroyed_at IS NULL").fetchone()[0] >= 1  # type: ignore[index]
    finally:
        cdr.execute("DROP OWNED BY ops, dpo; DROP ROLE ops, dpo")


def _range_count(db: DB) -> tuple[int, int]:
    """(partitions attached, distinct ranges) of the table."""
    rows = db.all("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                  " WHERE i.inhparent = 'public.cdr'::regclass")
    return len(rows), len({r[0] for r in rows})


@pytest.mark.parametrize("stop_after", ["prepare", "copy", "swap"])
def test_interrupted_rewrite_is_finished_by_next_run(cdr: DB, stop_after: str) -> None:
    total = cdr.one("SELECT count(*) FROM cdr")
    leaf = cdr.one("SELECT leaf FROM pgretention._anon_due(1, 'all', now()) LIMIT 1")
    op = cdr.one("SELECT pgretention._anon_prepare(1, 'all', %s::regclass, now())", [leaf])
    # a late row for that range arrives during the rewrite: it is kept, anonymised
    lower = cdr.one("SELECT range_from FROM pgretention.anon_op WHERE id = %s", [op])
    cdr.execute("INSERT INTO cdr (id, started_at, caller, content) VALUES (-1, %s::timestamptz + interval '1 hour',"
                " '+31600000001', 'late and secret')", [lower])
    if stop_after in ("copy", "swap"):
        cdr.execute("SELECT pgretention._anon_copy(%s)", [op])
    if stop_after == "swap":
        assert cdr.one("SELECT pgretention._anon_swap(%s)", [op]) is True
    assert _range_count(cdr)[0] == _range_count(cdr)[1]
    anonymise(cdr)
    assert cdr.one("SELECT count(*) FROM cdr") == total + 1
    assert cdr.one("SELECT caller <> '+31600000001' AND content = '[redacted]' FROM cdr WHERE id = -1") is True
    assert cdr.one("SELECT count(*) FROM pgretention.anon_op WHERE state <> 'done'") == 0
    parts, ranges = _range_count(cdr)
    assert parts == ranges
    assert cdr.one("SELECT count(*) FROM cdr WHERE content LIKE 'secret%' AND started_at < date_trunc('day', now() - interval '30 days')") == 0
    assert cdr.one("SELECT count(*) FROM pg_class WHERE relname LIKE '%pgr_anon' OR relname LIKE '%pgr_orig'") == 0


@pytest.mark.parametrize("how", ["terminate", "immediate_stop"])
def test_killed_backend_during_copy(cdr: DB, how: str) -> None:
    """The backend copying a partition dies (pg_terminate_backend, or the server stops at once)."""
    if how == "immediate_stop" and cdr.server.cluster is None:
        pytest.skip("needs the local throwaway cluster to stop it")
    cdr.execute("INSERT INTO cdr SELECT 100000 + g, date_trunc('day', now() - interval '45 days') + (g % 86000) * interval '1 second',"
                " '+31611111111', '+31622222222', 'x@example.org', '10.0.0.1', 'secret', '{}', 1 FROM generate_series(1, 300000) g")
    total = cdr.one("SELECT count(*) FROM cdr")
    victim = Victim(cdr, "CALL pgretention.anon_run()").start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the big partition is being copied
        if cdr.one("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query LIKE '%%run_anonymiser%%'"
                   " AND state = 'active'", [victim.pid]) and cdr.one("SELECT count(*) FROM pgretention.anon_op") > 0:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    if how == "terminate":
        cdr.execute("SELECT pg_terminate_backend(%s)", [victim.pid])
    else:
        assert cdr.server.cluster is not None
        cdr.server.cluster.restart(mode="immediate")
    victim.join()
    anonymise(cdr)
    assert cdr.one("SELECT count(*) FROM cdr") == total
    parts, ranges = _range_count(cdr)
    assert parts == ranges
    assert cdr.one("SELECT count(*) FROM cdr WHERE content = 'secret'") == 0
    assert cdr.one("SELECT count(*) FROM pgretention.anon_op WHERE state <> 'done'") == 0


def test_rollups_before_drop(cdr: DB) -> None:
    target = cdr.one("SELECT pgretention.rollup_add('public.cdr', 'daily', %s, %s, 3)",
                     [Jsonb([{"column": "started_at", "trunc": "day"}, {"column": "callee", "prefix": 5}]),
                      Jsonb({"calls": "count", "total_duration": "sum:duration"})])
    assert target == "public.cdr_rollup_daily"
    # a group of two calls (below the minimum size of 3) and one of four
    cdr.execute("INSERT INTO cdr (id, started_at, callee, duration) SELECT -g, date_trunc('day', now() - interval '50 days')"
                " + interval '1 hour', CASE WHEN g <= 2 THEN '+319999990000' ELSE '+319899980000' END, 10"
                " FROM generate_series(1, 6) g")
    raw = {(r[0], r[1]): (r[2], r[3]) for r in cdr.all(
        "SELECT date_trunc('day', started_at), left(callee, 5), count(*), sum(duration) FROM cdr"
        " WHERE started_at < date_trunc('day', now() - interval '10 days') GROUP BY 1, 2")}
    cdr.execute("SELECT pgretention.class_set('public.cdr', 'all', '10 days')")
    with cdr.connect() as conn:
        conn.execute("CALL pgretention.run()")
    dropped = cdr.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'")
    assert dropped >= 49
    assert cdr.one("SELECT count(*) FROM pgretention.rollup_done") == dropped
    rolled = {(r[0], r[1]): (r[2], r[3]) for r in cdr.all(
        "SELECT started_at_day, callee_prefix, calls, total_duration FROM cdr_rollup_daily")}
    assert rolled == {k: v for k, v in raw.items() if v[0] >= 3}
    assert any(v[0] < 3 for v in raw.values())  # some groups were too small and never appear
    assert cdr.one("SELECT sum(suppressed_rows) FROM pgretention.rollup_done") == sum(v[0] for v in raw.values() if v[0] < 3)


BAD_RULES = [
    ("SELECT pgretention.anon_rule_set('public.cdr', 'nosuch', 'null')", "column nosuch does not exist"),
    ("SELECT pgretention.anon_rule_set('public.cdr', 'started_at', 'time_trunc', 'day')", "time or class column"),
    ("SELECT pgretention.anon_rule_set('public.cdr', 'duration', 'pseudonym')", "needs a text column"),
    ("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'scramble')", "unknown anonymisation method"),
    ("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'e164_prefix', 'x')", "e164_prefix keeps"),
    ("SELECT pgretention.anon_rule_set('public.cdr', 'duration', 'constant', 'abc')", "does not fit column"),
    ("SELECT pgretention.rollup_add('public.cdr', 'r', '[{\"column\": \"nope\"}]', '{\"n\": \"count\"}')", "column nope does not exist"),
    ("SELECT pgretention.rollup_add('public.cdr', 'r', '[{\"column\": \"caller\"}]', '{\"n\": \"sum:1; drop\"}')",
     "must be count or sum"),
]


@pytest.mark.parametrize("call,message", BAD_RULES, ids=[m for _, m in BAD_RULES])
def test_bad_rules_change_nothing(cdr: DB, call: str, message: str) -> None:
    with cdr.connect() as conn:
        before = snapshot(conn)
        rules = conn.execute("SELECT * FROM pgretention.anon_rule ORDER BY column_name").fetchall()
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(call)
        assert diff(before, snapshot(conn)) == {}
        assert conn.execute("SELECT * FROM pgretention.anon_rule ORDER BY column_name").fetchall() == rules


def test_encrypted_fields(installed: DB) -> None:
    ct = installed.one("SELECT pgretention.field_encrypt('Alice, Main street 1', 'contacts')")
    assert isinstance(ct, bytes) and b"Alice" not in ct
    assert installed.one("SELECT pgretention.field_decrypt(%s, 'contacts')", [ct]) == "Alice, Main street 1"
    installed.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops2') THEN CREATE ROLE ops2 LOGIN;"
                      " END IF; END$$; GRANT pgretention_operator TO ops2")
    try:
        with psycopg.connect(installed.dsn_as("ops2"), autocommit=True) as c:
            assert c.execute("SELECT pgretention.field_encrypt('x', 'contacts') IS NOT NULL").fetchone()[0] is True  # type: ignore[index]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT pgretention.field_decrypt(%s, 'contacts')", [ct])
    finally:
        installed.execute("DROP OWNED BY ops2; DROP ROLE ops2")
