"""The audit log: one record per action with the right counts, tamper detection, its own retention."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB

UTC = timezone.utc
CDR_COLUMNS = "id bigint, region text, started_at timestamptz, caller text"
DELETE = "DELETE FROM pgretention.audit_log WHERE id = %s"


def audit_since(db: DB, after_id: int) -> list[tuple[str, str | None, dict[str, Any], str]]:
    return [(r[0], r[1], r[2], r[3]) for r in db.all(
        "SELECT action, object, details, outcome FROM pgretention.audit_log WHERE id > %s ORDER BY id", [after_id])]


def last_id(db: DB) -> int:
    return int(db.one("SELECT coalesce(max(id), 0) FROM pgretention.audit_log"))


def verify(db: DB) -> tuple[bool, int | None, str | None]:
    row = db.all("SELECT ok, first_broken_id, reason FROM pgretention.audit_verify()")[0]
    return row[0], row[1], row[2]


def tamper(db: DB, *steps: tuple[str, list[Any]]) -> None:
    """What a superuser can do: switch the guard off, rewrite, switch it on again."""
    with db.connect() as conn:
        conn.execute("ALTER TABLE pgretention.audit_log DISABLE TRIGGER audit_log_append_only")
        for statement, params in steps:
            conn.execute(statement, params)
        conn.execute("ALTER TABLE pgretention.audit_log ENABLE TRIGGER audit_log_append_only")


def test_every_engine_action_writes_exactly_one_record_with_counts(engine: DB) -> None:
    start = datetime.now(UTC) - timedelta(days=40)
    now = datetime.now(UTC)
    mark = last_id(engine)
    engine.execute(
        "SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s,"
        " p_class_column => 'region', p_default_class => 'intl', p_start => %s)",
        [CDR_COLUMNS, Jsonb({"eu": {"drop_after": "10 days", "members": ["NL"]},
                             "intl": {"drop_after": "20 days"}}), start])
    got = audit_since(engine, mark)
    assert [(a, o) for a, o, _, _ in got] == [("table.create", "public.cdr")]

    steps: list[tuple[str, str, str]] = [
        ("SELECT pgretention.class_add('public.cdr', 'sms', '30 days')", "class.add", "public.cdr"),
        ("SELECT pgretention.class_set('public.cdr', 'sms', '25 days')", "class.change", "public.cdr"),
        ("SELECT pgretention.member_assign('public.cdr', 'SMS', 'sms')", "member.assign", "public.cdr"),
        ("SELECT pgretention.setting_set('batch_size', '1000')", "setting.change", "batch_size"),
    ]
    for statement, action, obj in steps:
        mark = last_id(engine)
        engine.execute(statement)
        got = audit_since(engine, mark)
        assert [(a, o, out) for a, o, _, out in got] == [(action, obj, "ok")], statement

    # rows: 3 per day in eu over 40 days, and 5 rows too old for any partition (default partition)
    engine.execute("INSERT INTO cdr SELECT g, 'NL', %s::timestamptz + g * interval '8 hours', 'x'"
                   " FROM generate_series(0, 119) g", [start])
    engine.execute("INSERT INTO cdr SELECT 1000 + g, 'NL', %s::timestamptz - interval '1 year', 'x'"
                   " FROM generate_series(1, 5) g", [start])
    expected_drop = engine.all(
        "SELECT partition, (SELECT count(*) FROM cdr c WHERE c.region = 'NL' AND c.started_at >= range_from::timestamptz"
        " AND c.started_at < range_to::timestamptz) FROM pgretention.plan(%s) WHERE action LIKE 'detach%%'"
        " AND class_name = 'eu' ORDER BY range_from", [now])
    mark = last_id(engine)
    engine.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [now])
    got = audit_since(engine, mark)
    drops = [d for a, _, d, _ in got if a == "partition.drop"]
    assert len(drops) == engine.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'") > 0
    assert [(f"public.{d['partition']}", d["rows"]) for d in drops if d["class"] == "eu"] == \
        [(p, n) for p, n in expected_drop]
    purges = [d for a, _, d, _ in got if a == "default.purge"]
    assert [(d["class"], d["rows"]) for d in purges] == [("eu", 5)]
    runs = [d for a, _, d, _ in got if a == "run"]
    assert len(runs) == 1
    assert runs[0]["totals"]["rows_deleted"] == 5
    assert runs[0]["totals"]["partitions_dropped"] == len(drops)
    # nothing else was written, and counters for metrics agree with the records
    assert {a for a, _, _, _ in got} == {"partition.drop", "default.purge", "run"}
    assert engine.one("SELECT rows FROM pgretention.audit_counter WHERE action = 'default.purge'") == 5
    assert engine.one("SELECT records FROM pgretention.audit_counter WHERE action = 'partition.drop'") == len(drops)
    # a run with nothing to do writes no record
    mark = last_id(engine)
    engine.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [now])
    assert audit_since(engine, mark) == []
    # refused input writes nothing
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        engine.execute("SELECT pgretention.setting_set('batch_size', '-1')")
    assert audit_since(engine, mark) == []
    # releasing the table: one record
    mark = last_id(engine)
    engine.execute("SELECT pgretention.table_release('public.cdr')")
    assert [(a, o) for a, o, _, _ in audit_since(engine, mark)] == [("table.release", "public.cdr")]
    assert verify(engine) == (True, None, None)
    # no personal data: the caller numbers never appear in the log
    assert engine.one("SELECT count(*) FROM pgretention.audit_log WHERE details::text LIKE '%%\"x\"%%'") == 0


def _records(db: DB, n: int) -> list[int]:
    for i in range(n):
        db.execute("SELECT pgretention._audit('test.action', %s, %s)", [f"object{i}", Jsonb({"rows": i})])
    return [r[0] for r in db.all("SELECT id FROM pgretention.audit_log ORDER BY id")]


def test_ids_have_no_gaps_even_after_rollbacks(installed: DB) -> None:
    ids = _records(installed, 3)
    with installed.connect(autocommit=False) as conn:
        conn.execute("SELECT pgretention._audit('test.rolled_back', 'x')")
        conn.rollback()
    ids2 = _records(installed, 2)
    assert ids2 == list(range(ids2[0], ids2[0] + len(ids2)))
    assert len(ids2) == len(ids) + 2
    assert verify(installed) == (True, None, None)


def test_update_by_superuser_is_detected_at_that_record(installed: DB) -> None:
    ids = _records(installed, 6)
    target = ids[3]
    tamper(installed, ("UPDATE pgretention.audit_log SET details = '{\"rows\": 0}' WHERE id = %s", [target]))
    assert verify(installed) == (False, target, "content does not match its hash")


def test_update_with_recomputed_hash_is_detected(installed: DB) -> None:
    ids = _records(installed, 6)
    target = ids[2]
    tamper(installed,
           ("UPDATE pgretention.audit_log SET details = '{}' WHERE id = %s", [target]),
           ("UPDATE pgretention.audit_log a SET hash = sha256(coalesce(a.prev_hash, '\\x'::bytea)"
            " || convert_to(pgretention._audit_record_text(a), 'UTF8')) WHERE a.id = %s", [target]))
    ok, broken, reason = verify(installed)
    assert (ok, broken) == (False, target)
    assert reason == f"record {target} was altered and re-hashed: record {target + 1} links to a different hash"


def test_deleted_record_is_named(installed: DB) -> None:
    ids = _records(installed, 6)
    tamper(installed, (DELETE, [ids[2]]))
    assert verify(installed) == (False, ids[2], f"record {ids[2]} is missing")
    tamper(installed, (DELETE, [ids[3]]))
    assert verify(installed) == (False, ids[2], f"records {ids[2]} to {ids[3]} are missing")


def test_deleted_last_and_first_records_are_named(installed: DB) -> None:
    ids = _records(installed, 5)
    tamper(installed, (DELETE, [ids[-1]]))
    assert verify(installed) == (False, ids[-1], f"record {ids[-1]} (the last) is missing")
    db2_ids = ids[:-1]
    tamper(installed, ("DELETE FROM pgretention.audit_log WHERE id <= %s", [db2_ids[1]]),
           ("UPDATE pgretention.audit_head SET last_id = %s,"
            " last_hash = (SELECT hash FROM pgretention.audit_log WHERE id = %s)", [db2_ids[-1], db2_ids[-1]]))
    ok, broken, reason = verify(installed)
    assert (ok, broken) == (False, db2_ids[1])
    assert reason == f"records before {db2_ids[2]} are missing and no checkpoint record covers the cut"


def test_reordered_record_is_detected(installed: DB) -> None:
    ids = _records(installed, 6)
    a, b = ids[2], ids[3]
    tamper(installed, ("UPDATE pgretention.audit_log SET id = -id WHERE id IN (%s, %s)", [a, b]),
           ("UPDATE pgretention.audit_log SET id = CASE id WHEN -%s THEN %s ELSE %s END WHERE id < 0", [a, b, a]))
    assert verify(installed) == (False, a, f"record {a} is out of order: it links to record {b}, not to record {a - 1}")


def test_normal_roles_cannot_tamper(installed: DB) -> None:
    _records(installed, 2)
    installed.execute(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN"
        " CREATE ROLE mallory LOGIN; END IF; END$$;"
        "GRANT pgretention_admin, pgretention_operator, pgretention_auditor TO mallory")
    try:
        with psycopg.connect(installed.dsn_as("mallory"), autocommit=True) as conn:
            for statement in ("UPDATE pgretention.audit_log SET outcome = 'x'",
                              "DELETE FROM pgretention.audit_log",
                              "TRUNCATE pgretention.audit_log",
                              "INSERT INTO pgretention.audit_log (action, hash) VALUES ('fake', '\\x')",
                              "UPDATE pgretention.audit_head SET last_id = 1",
                              "ALTER TABLE pgretention.audit_log DISABLE TRIGGER audit_log_append_only",
                              "SELECT set_config('pgretention.audit_cut', '999', false);"
                              " DELETE FROM pgretention.audit_log"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            # the auditor's tools work
            assert conn.execute("SELECT ok FROM pgretention.audit_verify()").fetchone()[0] is True  # type: ignore[index]
        # the owner cannot rewrite or delete either while the guard is on
        for statement in ("UPDATE pgretention.audit_log SET outcome = 'x'", "DELETE FROM pgretention.audit_log",
                          "TRUNCATE pgretention.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                installed.execute(statement)
        assert verify(installed)[0] is True
    finally:
        installed.execute("DROP OWNED BY mallory; DROP ROLE mallory")


def test_audit_retention_keeps_chain_verifiable(engine: DB) -> None:
    ids = _records(engine, 8)
    now = datetime.now(UTC)
    # nothing is older than 5 years yet: nothing happens, no record
    assert engine.one("SELECT pgretention.audit_retention(%s)", [now]) == 0
    assert last_id(engine) == ids[-1]
    # backdate the first four records by 6 years (a superuser rewriting history, then re-chaining
    # everything, stands in for six years passing)
    tamper(engine, ("UPDATE pgretention.audit_log SET at = at - interval '6 years' WHERE id <= %s", [ids[3]]))
    _rechain(engine)
    assert verify(engine) == (True, None, None)
    removed = engine.one("SELECT pgretention.audit_retention(%s)", [now])
    assert removed == 4
    first = engine.one("SELECT min(id) FROM pgretention.audit_log")
    assert first == ids[4]
    cp = engine.all("SELECT id, details FROM pgretention.audit_log WHERE action = 'audit.checkpoint'")
    assert len(cp) == 1
    details = cp[0][1]
    assert details["first_kept_id"] == ids[4] and details["records_removed"] == 4
    assert details["cut_hash"] == engine.one("SELECT encode(prev_hash, 'hex') FROM pgretention.audit_log WHERE id = %s",
                                             [ids[4]])
    assert verify(engine) == (True, None, None)
    # deleting more records after the cut is detected at the new start
    tamper(engine, (DELETE, [ids[4]]))
    assert verify(engine) == (False, ids[4],
                              f"records before {ids[5]} are missing and no checkpoint record covers the cut")


def test_audit_retention_of_everything_leaves_the_checkpoint(engine: DB) -> None:
    ids = _records(engine, 3)
    # every record older than 5 years (a superuser re-dating and re-chaining them stands in for
    # five years passing: the retention runs on the clock, whatever the session simulates)
    tamper(engine, ("UPDATE pgretention.audit_log SET at = at - interval '5 years 3 days'", []))
    _rechain(engine)
    later = datetime.now(UTC) + timedelta(days=5 * 366 + 2)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="measured against the clock"):
        engine.execute("SELECT pgretention.audit_retention(%s)", [later])
    assert engine.one("SELECT pgretention.audit_retention()") == len(ids)
    rows = engine.all("SELECT id, action FROM pgretention.audit_log ORDER BY id")
    assert rows == [(ids[-1] + 1, "audit.checkpoint")]
    assert verify(engine) == (True, None, None)
    engine.execute("SELECT pgretention._audit('test.after', 'x')")
    assert verify(engine) == (True, None, None)
    # retention is never shorter than a year
    engine.execute("SELECT pgretention.setting_set('audit_keep', '30 days')")
    mark = last_id(engine)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 1 year"):
        engine.execute("SELECT pgretention.audit_retention()")
    assert last_id(engine) == mark


def _rechain(db: DB) -> None:
    """Recompute every hash in id order (what only a superuser could do)."""
    with db.connect() as conn:
        conn.execute("ALTER TABLE pgretention.audit_log DISABLE TRIGGER audit_log_append_only")
        prev: bytes | None = None
        for (rid,) in conn.execute("SELECT id FROM pgretention.audit_log ORDER BY id").fetchall():
            row = conn.execute(
                "UPDATE pgretention.audit_log a SET prev_hash = %s, hash = sha256(coalesce(%s::bytea, '\\x'::bytea)"
                " || convert_to(pgretention._audit_record_text(a), 'UTF8')) WHERE id = %s RETURNING hash",
                [prev, prev, rid]).fetchone()
            assert row is not None
            prev = row[0]
        conn.execute("UPDATE pgretention.audit_head SET last_hash = %s", [prev])
        conn.execute("ALTER TABLE pgretention.audit_log ENABLE TRIGGER audit_log_append_only")


def test_cli_audit_verify_and_show(engine: DB) -> None:
    ids = _records(engine, 4)
    res = engine.cli("audit", "verify", check=True)
    assert "intact" in res.stdout
    res = engine.cli("--format", "json", "audit", "show", "--action", "test", "--limit", "2", check=True)
    shown = json.loads(res.stdout)
    assert [r["id"] for r in shown] == ids[-2:]
    assert shown[-1]["details"] == {"rows": 3}
    res = engine.cli("audit", "show", "--limit", "0")
    assert res.returncode == 6 and res.stderr.count("\n") == 1
    tamper(engine, (DELETE, [ids[1]]))
    res = engine.cli("audit", "verify")
    assert res.returncode == 1
    assert res.stderr == f"pgretention: error: audit log BROKEN at record {ids[1]}: record {ids[1]} is missing\n"


def test_concurrent_writers_keep_one_gapless_chain(installed: DB) -> None:
    import threading

    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            with installed.connect() as conn:
                for i in range(150):
                    conn.execute("SELECT pgretention._audit('test.concurrent', %s, %s)", [tag, Jsonb({"rows": i})])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [r[0] for r in installed.all("SELECT id FROM pgretention.audit_log ORDER BY id")]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert installed.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'test.concurrent'") == 450
    assert installed.one("SELECT rows FROM pgretention.audit_counter WHERE action = 'test.concurrent' AND object = 'w1'") \
        == sum(range(150))
    assert verify(installed) == (True, None, None)
