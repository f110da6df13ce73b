"""H3, M2, M8, L8: the audit log and the job history, rewritten by those who should only add to them.

Fixed means: the records are still there, or ``verify_audit`` (as the auditor sees it) says the
chain is broken; forged records and job-history changes do not exist.
"""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import Actors, attempt, audit_ids, require, verify_audit

# Internal functions the attacks call by name (update here when internals are renamed).
# _run_end and _entity_run_end of the review are now one function, _job_end(run, deferred units).
INTERNAL = {
    "run_end": ("pgretention", "_job_end"),
    "entity_run_end": ("pgretention", "_job_end"),
    "job_begin": ("pgretention", "_job_begin"),
    "audit": ("pgretention", "_audit"),
}


def call(key: str, args: str) -> sql.Composed:
    return sql.SQL("SELECT {}(" + args + ")").format(sql.Identifier(*INTERNAL[key]))


def some_history(actors: Actors) -> None:
    """A few ordinary audited actions of the admin."""
    with actors.connect("adm") as adm:
        adm.execute("SELECT pgretention.setting_set('batch_size', '2000')")
        adm.execute("SELECT pgretention.hold_release(pgretention.hold_set('fraud', 'POLICE-5', 'email', 'x@example.org'))")
        adm.execute("SELECT pgretention.setting_set('batch_size', '5000')")


def auditor_verifies(actors: Actors) -> tuple[bool, str | None]:
    with actors.connect("aud") as aud:
        rows = aud.execute("SELECT ok, reason FROM pgretention.audit_verify()").fetchall()
    require(len(rows) == 1, "verify_audit answers the auditor")
    return bool(rows[0][0]), rows[0][1]


@pytest.mark.parametrize("attacker", ["adm", "op_when_simulation_on"])
def test_h3_audit_log_wiped_and_still_verifies(actors: Actors, attacker: str) -> None:
    """H3: the admin turns on allow_future_reference_time and runs ``audit_retention('2300-01-01')``:
    every record goes, and ``verify_audit`` still says intact. The operator can do the same while
    the setting is on (as the demo leaves it). Simulated time is now the installing role's, per
    session (``simulation_enable``): here it simulates in a session of its own meanwhile."""
    db = actors.db
    some_history(actors)
    before = audit_ids(db)
    outs = []
    with db.connect() as installer_role, actors.connect("adm" if attacker == "adm" else "op") as conn:
        if attacker != "adm":
            installer_role.execute("SELECT pgretention.simulation_enable()")
        outs.append(attempt(conn, "SELECT pgretention.audit_retention('2300-01-01')"))
        if attacker == "adm":
            outs.append(attempt(conn, "SELECT pgretention.setting_set('allow_future_reference_time', 'on')"))
            outs.append(attempt(conn, "SELECT pgretention.simulation_enable()"))
            outs.append(attempt(conn, "SELECT pgretention.audit_retention('2300-01-01')"))
            outs.append(attempt(conn, "SELECT pgretention.setting_set('allow_future_reference_time', 'off')"))
    removed = sorted(set(before) - set(audit_ids(db)))
    ok, reason = auditor_verifies(actors)
    assert not removed or not ok, \
        f"{len(removed)} of {len(before)} records removed and verify_audit says intact; {[str(o) for o in outs]}"


def test_m2_operator_turns_failed_run_into_ok(actors: Actors) -> None:
    """M2: ``_job_end`` (was ``_run_end``) takes status and summary from the caller: the operator marks a failed
    run 'ok' with a summary of its choice."""
    db = actors.db
    rid = db.one("INSERT INTO pgretention.job_run (runner, reference_time, status, finished_at, message, summary)"
                 " VALUES ('cron', now(), 'failed', now(), 'lock wait on public.cdr', '{}') RETURNING id")
    with actors.connect("op") as op:
        out = attempt(op, call("run_end", "id, %s") + sql.SQL(" FROM pgretention.job_run WHERE status <> 'ok'"),
                      [Jsonb({"totals": {"partitions_dropped": 0, "rows_deleted": 0}, "note": "all good"})])
    row = db.all("SELECT status, message FROM pgretention.job_run WHERE id = %s", [rid])
    assert row == [("failed", "lock wait on public.cdr")], f"job history rewritten: {row}; attack {out}"


def test_m2_operator_writes_forged_run_audit_record(actors: Actors) -> None:
    """M2: ``_run_end`` writes a hash-chained 'run' audit record with a made-up summary (999
    partitions dropped 'by adm'); the chain verifies. Also tried on a run of the operator's own
    (``_job_begin`` is granted to it, for ``run()``): whatever it passes, the summary is the run's."""
    db = actors.db
    db.execute("INSERT INTO pgretention.job_run (runner, reference_time) VALUES ('cron', now())")
    forged_summary = Jsonb({"totals": {"partitions_dropped": 999, "rows_deleted": 12345}, "dropped_by": "adm",
                            "reason": "DPO instruction 2026-11"})
    with actors.connect("op") as op:
        outs = [attempt(op, call("run_end", "1, %s"), [forged_summary])]
        own = attempt(op, call("job_begin", "'cron', NULL, 'run', NULL"))
        outs.append(own)
        if own.ok:
            outs.append(attempt(op, call("run_end", "%s, %s"), [own.rows[0][0], forged_summary]))
            outs.append(attempt(op, call("run_end", "%s, %s"), [own.rows[0][0], Jsonb({"dropped_by": 1})]))
            outs.append(attempt(op, call("run_end", "%s, %s"), [own.rows[0][0], Jsonb({})]))
    forged = db.all("SELECT id, action FROM pgretention.audit_log WHERE details::text ~ '(dropped_by|12345|999)'")
    runs = db.all("SELECT summary FROM pgretention.job_run WHERE summary::text ~ '(dropped_by|12345|999)'")
    assert forged == [] and runs == [], \
        f"forged audit records {forged}, runs {runs}; attack {[str(o) for o in outs]}; verify {verify_audit(db)}"


def test_m2_operator_forges_entity_run_failure(actors: Actors) -> None:
    """M2: ``_job_end`` (was ``_entity_run_end``) marks an entity run failed with a made-up message and audits it."""
    db = actors.db
    rid = db.one("INSERT INTO pgretention.job_run (runner, reference_time, status, finished_at, summary)"
                 " VALUES ('cron', now(), 'ok', now(), '{\"engine\": \"entity\"}') RETURNING id")
    with actors.connect("op") as op:
        out = attempt(op, call("entity_run_end", "%s, %s"), [rid, Jsonb({"totals": {"rows": 5}, "forged": True})])
    status = db.one("SELECT status FROM pgretention.job_run WHERE id = %s", [rid])
    forged = db.all("SELECT id FROM pgretention.audit_log WHERE details ? 'forged'")
    assert status == "ok" and forged == [], f"entity run now {status}, forged records {forged}; attack {out}"


def test_m8_owner_cuts_recent_history_without_disabling_triggers(actors: Actors) -> None:
    """M8: the schema owner (the installing role) writes a checkpoint record itself, sets the two
    session settings the append-only trigger trusts and deletes recent records, triggers enabled:
    ``verify_audit`` says intact. (A full rewrite with triggers disabled is the documented limit.)"""
    db = actors.db
    some_history(actors)
    before = audit_ids(db)
    cut = before[-1]  # keep only the newest record: everything before goes, minutes old
    with db.connect(autocommit=False) as owner:
        cp = attempt(owner, call("audit", "'audit.checkpoint', 'pgretention.audit_log', jsonb_build_object("
                                          "'first_kept_id', %s::bigint, 'cut_hash', (SELECT encode(hash, 'hex')"
                                          " FROM pgretention.audit_log WHERE id = %s - 1), 'records_removed', %s)"),
                     [cut, cut, len(before) - 1])
        out = cp
        if cp.ok:
            owner.execute("SELECT set_config('pgretention.audit_cut', %s, true),"
                          " set_config('pgretention.audit_checkpoint', %s, true)", [str(cut), str(cp.rows[0][0])])
            out = attempt(owner, "DELETE FROM pgretention.audit_log WHERE id < %s", [cut])
        owner.commit()
    removed = sorted(set(before) - set(audit_ids(db)))
    ok, reason = auditor_verifies(actors)
    assert not removed or not ok, f"{len(removed)} recent records cut and verify_audit says intact; delete {out}"


def test_l8_client_chooses_audit_application(actors: Actors) -> None:
    """L8: ``audit_log.application`` is the client's application_name: an operator's session
    records its actions as done by 'cron'."""
    db = actors.db
    with actors.connect("op", application_name="cron") as op:
        out = attempt(op, "SELECT pgretention.request_create('access', '{\"phone\": \"+31612340000\"}')")
    spoofed = db.all("SELECT id, application FROM pgretention.audit_log WHERE session_role = %s"
                     " AND application = 'cron'", [actors["op"]])
    require(out.ok, f"the operator creates a request ({out})")
    assert spoofed == [], f"audit records claim to come from the scheduler: {spoofed}; {out}"
