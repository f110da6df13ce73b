"""Crash trials: the anonymiser, the entity engine and adoption, each killed at a random moment.

Every trial starts the operation in a thread, kills its backend (``pg_terminate_backend``) after a
random delay drawn from the trial's seed, lets the next run (or the documented way to resume)
finish the work, and checks the outcome exactly: rows per partition, nothing identifying left past
anonymise_after, nothing lost or duplicated, nothing pending, the audit chain intact. Two seeds per
operation run in the default suite, 30 with ``-m slow`` (``make test-slow``); one more test per
operation stops the whole server at once (``immediate`` shutdown, a simulated crash) where the
existing suites do not already do so (the anonymiser's is in test_anonymiser.py).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_crash import Victim, durable_commits, immediate_stop_during, needs_local_cluster
from tests.fix_db import DB

UTC = timezone.utc


# -- a. anonymiser: rewrite-and-swap of every partition past anonymise_after --------------------------
ANON_COLUMNS = ("id bigint, started_at timestamptz NOT NULL, caller text, callee text, email text, cell_ip inet,"
                " content text, meta jsonb, duration int")
ANON_RULES = [("caller", "pseudonym", None), ("callee", "e164_prefix", "4"), ("email", "null", None),
              ("cell_ip", "ip_prefix", "24/48"), ("content", "redact", None), ("meta", "jsonb_drop", "imsi, imei"),
              ("id", "keep", None), ("duration", "keep", None)]
ANON_DAYS, ANON_PER_DAY = 60, 400


def _anon_fixture(db: DB) -> dict[str, Any]:
    """60 days of calls in daily partitions, anonymise after 30 days; the originals kept aside."""
    db.execute("SELECT pgretention.set_setting('allow_future_reference_time', 'on')")
    at = db.one("SELECT now()")
    db.execute("SELECT pgretention.create_table('public.cdr', %s, 'started_at', '1 day', %s,"
               " p_start => %s::timestamptz - interval '64 days')",
               [ANON_COLUMNS, Jsonb({"all": {"anonymise_after": "30 days", "drop_after": "400 days"}}), at])
    db.execute("CREATE INDEX ON cdr (caller)")
    db.execute(
        "INSERT INTO cdr SELECT g, %s::timestamptz - interval '60 days' + g * make_interval(secs => 86400.0 / %s),"
        " '+316123' || lpad((g %% 97)::text, 5, '0'), '+3162999' || lpad((g %% 997)::text, 4, '0'),"
        " 'user' || (g %% 89) || '@example.org', ('10.1.' || (g %% 250) || '.' || (g %% 200 + 1))::inet,"
        " 'secret message ' || g, jsonb_build_object('imsi', '20404' || g, 'imei', '35' || g, 'cell', g %% 7),"
        " g %% 600 FROM generate_series(1, %s) g", [at, ANON_PER_DAY, ANON_DAYS * ANON_PER_DAY - 1])
    for col, method, param in ANON_RULES:
        db.execute("SELECT pgretention.anon_set_rule('public.cdr', %s, %s, %s)", [col, method, param])
    db.execute("CREATE TABLE public.orig AS TABLE cdr")
    db.execute("ANALYZE cdr")
    due = db.all("SELECT leaf_name, upper_abs FROM pgretention._anon_due(1, 'all', %s)", [at])
    assert len(due) >= 29
    return {"at": at, "bound": max(d[1] for d in due), "due": len(due), "per_partition": _rows_per_partition(db),
            "total": db.one("SELECT count(*) FROM cdr")}


def _rows_per_partition(db: DB) -> dict[str, int]:
    leaves = db.all("SELECT relid::text FROM pg_partition_tree('public.cdr') WHERE isleaf")
    counts = dict(db.all("SELECT tableoid::regclass::text, count(*) FROM cdr GROUP BY 1"))
    return {name: counts.get(name, 0) for (name,) in leaves}


def _check_anonymised(db: DB, fx: dict[str, Any]) -> None:
    """After the next run: every due partition rewritten exactly once, rows exact, nothing left over."""
    with db.connect() as conn:
        conn.execute("CALL pgretention.run_anonymiser(%s)", [fx["at"]])
    bound = fx["bound"]
    # exact rows in every partition (the copy carries the original's name), none lost or doubled
    assert _rows_per_partition(db) == fx["per_partition"]
    assert db.one("SELECT count(*) FROM cdr") == db.one("SELECT count(DISTINCT id) FROM cdr") == fx["total"]
    assert db.one("SELECT count(*) FROM orig o WHERE NOT EXISTS (SELECT FROM cdr c WHERE c.id = o.id)") == 0
    # past anonymise_after: no original identifier or content left, every rule applied
    leaked = db.one(
        "SELECT count(*) FROM cdr c JOIN orig o USING (id) WHERE c.started_at < %s AND (c.caller = o.caller"
        " OR c.callee = o.callee OR c.email IS NOT NULL OR c.cell_ip = o.cell_ip OR c.content <> '[redacted]'"
        " OR c.meta ?| ARRAY['imsi', 'imei'] OR c.caller !~ '^p[0-9a-f]{24}$' OR c.callee <> left(o.callee, 5)"
        " OR c.duration <> o.duration OR c.started_at <> o.started_at)", [bound])
    assert leaked == 0
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s", [bound]) > 0
    # within the window: untouched
    changed = db.one(
        "SELECT count(*) FROM cdr c JOIN orig o USING (id) WHERE c.started_at >= %s AND"
        " (c.caller, c.callee, c.email, c.cell_ip, c.content, c.meta, c.duration, c.started_at) IS DISTINCT FROM"
        " (o.caller, o.callee, o.email, o.cell_ip, o.content, o.meta, o.duration, o.started_at)", [bound])
    assert changed == 0
    assert db.one("SELECT count(*) FROM cdr WHERE started_at >= %s", [bound]) > 0
    # no shadow tables, capture triggers or open operations; one attached partition per range
    assert db.one("SELECT count(*) FROM pg_class WHERE relname LIKE '%%pgr_anon' OR relname LIKE '%%pgr_orig'") == 0
    assert db.one("SELECT count(*) FROM pg_trigger WHERE tgname = 'pgr_anon_capture'") == 0
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 0
    bounds = db.all("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_partition_tree('public.cdr') p"
                    " JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf")
    assert len(bounds) == len({b for (b,) in bounds}) == len(fx["per_partition"])
    # each due partition anonymised once, audited once; the chain verifies
    done = db.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'")
    assert done == db.one("SELECT count(DISTINCT range_from) FROM pgretention.anon_op") == fx["due"]
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'partition.anonymise'") == done
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


def _crash_anonymiser_trial(db: DB, seed: int) -> None:
    fx = _anon_fixture(db)
    victim = Victim(db, "CALL pgretention.run_anonymiser(%s)", [fx["at"]]).start()
    killed = victim.kill_after(random.Random(seed).uniform(0.0, 0.9))  # a run takes about 0.9 s
    ops = dict(db.all("SELECT state, count(*) FROM pgretention.anon_op GROUP BY 1"))
    print(f"anonymiser trial {seed}: killed={killed} operations at the kill: {ops}")
    _check_anonymised(db, fx)


@pytest.mark.parametrize("seed", range(2))
def test_anonymiser_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_anonymiser_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(300, 330))
def test_anonymiser_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_anonymiser_trial(installed, seed)


# -- b. entity engine: short audited batches over a hierarchy with dependants and exemptions ---------
ENTITY_DDL = """
CREATE TABLE public.acct (id int PRIMARY KEY, parent_id int REFERENCES public.acct, last_active timestamptz NOT NULL,
                          legal_hold boolean NOT NULL DEFAULT false);
CREATE TABLE public.note (id serial PRIMARY KEY, acct_id int NOT NULL REFERENCES public.acct, body text);
CREATE INDEX ON public.acct (parent_id);
CREATE INDEX ON public.note (acct_id);
"""
ENTITY_AT = datetime(2026, 6, 1, tzinfo=UTC)
OLD, RECENT = datetime(2023, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)


def _entity_fixture(db: DB) -> dict[str, Any]:
    """Accounts inactive for 24 months go with their notes; live ones, their ancestors and legal holds stay.

    1..1000: old; 901..1000 are children of 1..100 (a second pass removes the parents).
    1001..1100: active. 1101..1120: old parents of the active 1121..1140 (kept by descendants).
    1141..1160: old under legal hold (exempt); 1161..1170: old parents of held 1141..1150 (kept).
    """
    db.execute("SELECT pgretention.set_setting('allow_future_reference_time', 'on')")
    db.execute(ENTITY_DDL)
    rows: list[tuple[int, int | None, datetime, bool]] = []
    for i in range(1, 1171):
        parent = i - 900 if 901 <= i <= 1000 else i - 20 if 1121 <= i <= 1140 else i + 20 if 1141 <= i <= 1150 else None
        active = RECENT if 1001 <= i <= 1100 or 1121 <= i <= 1140 else OLD
        rows.append((i, parent, active, 1141 <= i <= 1160))
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO public.acct VALUES (%s, NULL, %s, %s)", [(r[0], r[2], r[3]) for r in rows])
        cur.executemany("UPDATE public.acct SET parent_id = %s WHERE id = %s",
                        [(r[1], r[0]) for r in rows if r[1] is not None])
        cur.execute("INSERT INTO public.note (acct_id, body) SELECT a.id, 'n' || k FROM public.acct a,"
                    " generate_series(1, 3) k")
    db.execute("SELECT pgretention.create_entity_rule('inactive', 'public.acct', 'id', '[{\"column\": \"last_active\"}]',"
               " '24 months', p_dependants => '[{\"table\": \"public.note\", \"fk\": \"acct_id\"}]',"
               " p_parent_column => 'parent_id', p_exempt_column => 'legal_hold')")
    # tiny batches (about 1000 of them, some 2 s in all), so that a run can be killed anywhere
    db.execute("SELECT pgretention.set_setting('entity_batch_max', '8')")
    db.execute("SELECT pgretention.set_setting('entity_batch_target', '1ms')")
    survivors = set(range(1001, 1171))
    return {"survivors": survivors, "gone": 1170 - len(survivors)}


def _check_entities(db: DB, fx: dict[str, Any], *, killed: bool) -> None:
    # the dead run is still recorded as running (none when the kill came after the run's end)
    dead = db.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'running'")
    assert dead <= 1 and (killed or dead == 0)
    # every committed batch is whole: no note without its account
    assert db.one("SELECT count(*) FROM public.note n WHERE NOT EXISTS"
                  " (SELECT FROM public.acct a WHERE a.id = n.acct_id)") == 0
    left = db.one("SELECT count(*) FROM public.acct")
    assert db.one("SELECT count(*) FROM public.note") == 3 * left
    before = sum(r[0] for r in db.all("SELECT (details->>'rows')::int FROM pgretention.audit_log"
                                      " WHERE action = 'entity.delete'"))
    assert before == 1170 - left
    db.execute("SELECT pgretention.set_setting('entity_batch_max', '2000')")
    db.execute("SELECT pgretention.set_setting('entity_batch_target', '50ms')")
    with db.connect() as conn:
        conn.execute("CALL pgretention.run_entities(p_now => %s, p_runner => 'test')", [ENTITY_AT])
        status, summary = conn.execute("SELECT status, summary FROM pgretention.job_run ORDER BY id DESC LIMIT 1").fetchone()  # type: ignore[misc]
    assert status == "ok", summary
    assert summary["totals"]["rows"] == left - len(fx["survivors"])
    assert {r[0] for r in db.all("SELECT id FROM public.acct")} == fx["survivors"]
    assert db.one("SELECT count(*) FROM public.note") == 3 * len(fx["survivors"])
    assert db.one("SELECT count(*) FROM public.acct WHERE legal_hold") == 20
    audited = db.all("SELECT (details->>'rows')::int FROM pgretention.audit_log WHERE action = 'entity.delete'")
    assert sum(r[0] for r in audited) == fx["gone"]
    assert db.one("SELECT rows_deleted FROM pgretention.entity_rule WHERE rule_name = 'inactive'") == fx["gone"]
    assert db.one("SELECT dependants_deleted FROM pgretention.entity_rule WHERE rule_name = 'inactive'") == 3 * fx["gone"]
    assert db.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'running'") == 0
    interrupted = db.one("SELECT count(*) FROM pgretention.job_run WHERE message LIKE 'interrupted%%'")
    assert interrupted == dead
    # a further run finds nothing
    with db.connect() as conn:
        conn.execute("CALL pgretention.run_entities(p_now => %s, p_runner => 'test')", [ENTITY_AT])
    assert db.one("SELECT count(*) FROM public.acct") == len(fx["survivors"])
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


def _crash_entity_trial(db: DB, seed: int) -> None:
    fx = _entity_fixture(db)
    victim = Victim(db, "CALL pgretention.run_entities(p_now => %s, p_runner => 'test')", [ENTITY_AT]).start()
    killed = victim.kill_after(random.Random(seed).uniform(0.0, 1.9))  # a run takes about 2 s
    print(f"entity trial {seed}: killed={killed} accounts left at the kill:",
          db.one("SELECT count(*) FROM public.acct"))
    _check_entities(db, fx, killed=killed)


@pytest.mark.parametrize("seed", range(2))
def test_entity_run_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_entity_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(400, 430))
def test_entity_run_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_entity_trial(installed, seed)


def test_entity_run_survives_an_immediate_server_stop(installed: DB) -> None:
    needs_local_cluster(installed)
    fx = _entity_fixture(installed)
    durable_commits(installed)
    victim = Victim(installed, "CALL pgretention.run_entities(p_now => %s, p_runner => 'test')", [ENTITY_AT]).start()
    immediate_stop_during(installed, victim, lambda: (installed.one(
        "SELECT count(*) FROM pgretention.audit_log WHERE action = 'entity.delete'") or 0) >= 3, 0.1)
    assert installed.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'running'") == 1
    _check_entities(installed, fx, killed=True)


# -- c. adoption of a plain table while the application inserts --------------------------------------
ADOPT_ROWS = 150_000
ADOPT_DDL = """
CREATE TABLE public.calls (id bigint PRIMARY KEY, started_at timestamptz NOT NULL, caller text, duration int);
CREATE INDEX calls_started_idx ON public.calls (started_at);
"""


def _adopt_fixture(db: DB) -> None:
    db.execute(ADOPT_DDL)
    db.execute("INSERT INTO public.calls SELECT g, now() - interval '60 days' + g * interval '30 seconds',"
               " '+3161' || g, g %% 600 FROM generate_series(1, %s) g", [ADOPT_ROWS])


class Inserter:
    """One application connection inserting single rows (ids from 10,000,000 up) until stopped."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self.ok: list[int] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        with self.db.connect() as conn:
            k = 10_000_000
            while not self.stop.is_set():
                try:
                    conn.execute("INSERT INTO public.calls (id, started_at, caller, duration) VALUES (%s, now(), 'app', 1)",
                                 [k])
                    self.ok.append(k)
                except psycopg.Error as exc:
                    self.failed.append(str(exc).splitlines()[0])
                k += 1
                time.sleep(0.003)

    def __enter__(self) -> Inserter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _resume_adoption(db: DB) -> str:
    """What an operator does after a crash: cancel an adoption left before its swap, adopt again."""
    state = db.one("SELECT state FROM pgretention.adoption ORDER BY id DESC LIMIT 1")
    if state in ("prepared", "validated"):
        db.execute("SELECT pgretention.adopt_cancel('public.calls')")
    if state != "adopted":
        db.execute("CALL pgretention.adopt('public.calls', 'started_at', '5 years', p_key => 'local')")
    return str(state)


def _check_adopted(db: DB, expected_ids: set[int] | int) -> None:
    with db.connect() as conn:
        conn.execute("CALL pgretention.run(p_runner => 'test')")
    # exactly the rows written: none lost, none duplicated
    n = expected_ids if isinstance(expected_ids, int) else len(expected_ids)
    assert db.one("SELECT count(*) FROM public.calls") == db.one("SELECT count(DISTINCT id) FROM public.calls") == n
    if isinstance(expected_ids, set):
        assert {r[0] for r in db.all("SELECT id FROM public.calls WHERE id > %s", [ADOPT_ROWS])} == {
            i for i in expected_ids if i > ADOPT_ROWS}
    assert db.one("SELECT count(*) FROM public.calls WHERE id <= %s", [ADOPT_ROWS]) == ADOPT_ROWS
    assert db.one("SELECT sum(id) FROM public.calls WHERE id <= %s", [ADOPT_ROWS]) == ADOPT_ROWS * (ADOPT_ROWS + 1) // 2
    # partitioned as expected: the old table is the historical partition, then premade partitions
    assert db.one("SELECT relkind::text FROM pg_class WHERE oid = 'public.calls'::regclass") == "p"
    assert db.one("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'public.calls_adopted'::regclass") == (
        db.one("SELECT format('FOR VALUES FROM (%L) TO (%L)', '-infinity', cutover) FROM pgretention.adoption"
               " WHERE state = 'adopted'"))
    assert db.one("SELECT count(*) FROM pg_partition_tree('public.calls') WHERE isleaf") >= 3
    assert db.one("SELECT count(*) FROM public.calls_adopted") == ADOPT_ROWS + db.one(
        "SELECT count(*) FROM public.calls_adopted WHERE id > %s", [ADOPT_ROWS])
    assert db.one("SELECT count(*) FROM pgretention.managed_table WHERE table_name = 'calls'") == 1
    # nothing pending: one adoption done, any interrupted one cancelled, no unvalidated constraint
    states = [r[0] for r in db.all("SELECT state FROM pgretention.adoption ORDER BY id")]
    assert states[-1] == "adopted" and set(states[:-1]) <= {"cancelled"}
    assert db.one("SELECT count(*) FROM pg_constraint WHERE NOT convalidated AND conrelid IN"
                  " (SELECT relid FROM pg_partition_tree('public.calls'))") == 0
    assert db.one("SELECT count(*) FROM pg_class WHERE relname = 'calls_adopted'") == 1
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'table.adopt' AND outcome = 'ok'") == 1
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'table.adopt' AND outcome <> 'ok'") == (
        len(states) - 1)
    assert db.one("SELECT ok FROM pgretention.verify_audit()") is True


def _crash_adoption_trial(db: DB, seed: int) -> None:
    _adopt_fixture(db)
    with Inserter(db) as app:
        time.sleep(0.1)
        victim = Victim(db, "CALL pgretention.adopt('public.calls', 'started_at', '5 years', p_key => 'local')").start()
        killed = victim.kill_after(random.Random(seed).uniform(0.0, 0.3))  # adopt takes about 0.3 s
        state = _resume_adoption(db)
        print(f"adoption trial {seed}: killed={killed} adoption state at the kill: {state}")
        time.sleep(0.1)
    assert app.failed == []
    assert len(app.ok) > 0
    _check_adopted(db, set(range(1, ADOPT_ROWS + 1)) | set(app.ok))


@pytest.mark.parametrize("seed", range(2))
def test_adoption_killed_at_random_points(installed: DB, seed: int) -> None:
    _crash_adoption_trial(installed, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(500, 530))
def test_adoption_killed_at_random_points_30_trials(installed: DB, seed: int) -> None:
    _crash_adoption_trial(installed, seed)


def test_adoption_survives_an_immediate_server_stop(installed: DB) -> None:
    needs_local_cluster(installed)
    _adopt_fixture(installed)
    durable_commits(installed)
    victim = Victim(installed, "CALL pgretention.adopt('public.calls', 'started_at', '5 years', p_key => 'local')").start()
    # stop once the CHECK constraint is committed: during the validation or the swap (pg_partman's
    # part of it takes most of the adoption's time)
    immediate_stop_during(installed, victim, lambda: installed.one(
        "SELECT count(*) FROM pgretention.adoption WHERE state IN ('prepared', 'validated')") == 1, 0.0)
    print("adoption state at the stop:", _resume_adoption(installed))
    _check_adopted(installed, ADOPT_ROWS)
