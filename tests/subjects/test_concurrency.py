"""Concurrency of subject requests: an erasure request fulfilled while a run drops partitions."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.fix_cdr import daily_cdr, expired_partitions
from tests.fix_db import DB, last_run

# -- an erasure request fulfilled while a run drops partitions ----------------------------------------
SUBJECT, HELD_SUBJECT = "+31611111111", "+31612345678"
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def test_erasure_during_a_purge(installed: DB) -> None:
    db = installed
    at = daily_cdr(db, days=40, rows_per_day=2000)
    # the subject calls in every fifth record; another subject, under a disclosure order, once, long ago
    db.execute("UPDATE cdr SET caller = %s WHERE id %% 5 = 0", [SUBJECT])
    db.execute("UPDATE cdr SET callee = %s WHERE id = 17", [HELD_SUBJECT])
    db.execute("VACUUM ANALYZE cdr")
    db.execute("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    db.execute("SELECT pgretention.hold_set('disclosure order', 'ORDER-1', 'phone', %s)", [HELD_SUBJECT])
    hold_from = at - timedelta(hours=2)
    db.execute("SELECT pgretention.hold_set('regulator audit', 'REG-2', p_table => 'public.cdr', p_from => %s)", [hold_from])
    expired = expired_partitions(db, at)
    assert len(expired) >= 28
    bound = db.one("SELECT max(range_to)::timestamptz FROM pgretention._expired_leaves(1, 'all', %s)", [at])
    kept_total = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [bound])
    kept_subject = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s AND caller = %s", [bound, SUBJECT])
    held = db.one("SELECT count(*) FROM cdr WHERE started_at >= %s AND caller = %s", [hold_from, SUBJECT])
    assert 0 < held < kept_subject
    rid = db.one("SELECT pgretention.request_create('erasure', %s)", [Jsonb({"phone": [SUBJECT]})])

    run_errors: list[BaseException] = []
    erasure: dict[str, Any] = {"attempts": 0, "refusals": []}

    def runner() -> None:
        try:
            with db.connect() as conn:
                conn.execute("CALL pgretention.run(p_now => %s, p_runner => 'test')", [at])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            run_errors.append(exc)

    def eraser() -> None:
        with db.connect() as conn:
            while erasure["attempts"] < 50:
                erasure["attempts"] += 1
                try:
                    erasure["result"] = conn.execute("SELECT pgretention.request_fulfil(%s)", [rid]).fetchone()[0]  # type: ignore[index]
                    return
                except RETRYABLE as exc:
                    erasure["refusals"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    time.sleep(0.05)
                except psycopg.Error as exc:
                    erasure["error"] = exc
                    return

    run_thread = threading.Thread(target=runner)
    erase_thread = threading.Thread(target=eraser)
    run_thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (db.one("SELECT count(*) FROM pgretention.partition_op") or 0) < 3:
        time.sleep(0.005)
    erase_thread.start()
    dropped_at_start = db.one("SELECT count(*) FROM pgretention.partition_op")
    run_thread.join(120)
    erase_thread.join(120)
    assert not run_thread.is_alive() and not erase_thread.is_alive(), "deadlocked"
    print(f"erasure started after {dropped_at_start} of {len(expired)} drops; attempts {erasure['attempts']};"
          f" refusals {erasure['refusals']}")
    assert run_errors == []
    assert "error" not in erasure, erasure.get("error")
    assert erasure["result"]["status"] == "partially_fulfilled"
    assert erasure["result"]["held_rows"] == held
    status, summary = last_run(db)
    assert status == "ok", summary
    assert summary["totals"]["partitions_dropped"] == len(expired)
    # exact: expired partitions gone, the subject's other rows erased, held rows kept
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s", [bound]) == 0
    assert db.one("SELECT count(*) FROM cdr WHERE caller = %s", [SUBJECT]) == held
    assert db.one("SELECT count(*) FROM cdr WHERE caller = %s AND started_at < %s", [SUBJECT, hold_from]) == 0
    assert db.one("SELECT count(*) FROM cdr") == kept_total - (kept_subject - held)
    assert db.one("SELECT status FROM pgretention.subject_request WHERE id = %s", [rid]) == "partially_fulfilled"
    # the other subject's row was rescued into the hold store when its partition was dropped
    assert db.one("SELECT count(*) FROM pgretention.hold_store WHERE row_data->>'callee' = %s", [HELD_SUBJECT]) == 1
    assert db.one("SELECT count(*) FROM pgretention.hold_store") == 1
    assert db.one("SELECT count(*) FROM pgretention.partition_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 0
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'request.erasure'") == 1
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.drop'") == len(expired)
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True
