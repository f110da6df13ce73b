"""Crash trials of the entity engine: a run of short audited batches killed at a random moment.

Every trial starts ``run_entities()`` in a :class:`~tests.fix_crash.Victim`, kills its backend after a
random delay drawn from the trial's seed, lets the next run finish the work, and checks the outcome
exactly: every committed batch whole, nothing lost or deleted twice, the audit chain intact. Two
seeds run in the default suite, 30 with ``-m slow`` (``make test-slow``); one more test stops the
whole server at once (``immediate`` shutdown, a simulated crash).
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.fix_crash import Victim, durable_commits, immediate_stop_during, needs_local_cluster
from tests.fix_db import DB, simulate

UTC = timezone.utc


# -- entity engine: short audited batches over a hierarchy with dependants and exemptions ------------
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
    simulate(db)
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
    db.execute("SELECT pgretention.entity_rule_create('inactive', 'public.acct', 'id', '[{\"column\": \"last_active\"}]',"
               " '24 months', p_dependants => '[{\"table\": \"public.note\", \"fk\": \"acct_id\"}]',"
               " p_parent_column => 'parent_id', p_exempt_column => 'legal_hold')")
    # tiny batches (about 1000 of them, some 2 s in all), so that a run can be killed anywhere
    db.execute("SELECT pgretention.setting_set('entity_batch_max', '8')")
    db.execute("SELECT pgretention.setting_set('entity_batch_target', '1ms')")
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
    db.execute("SELECT pgretention.setting_set('entity_batch_max', '2000')")
    db.execute("SELECT pgretention.setting_set('entity_batch_target', '50ms')")
    with db.connect() as conn:
        conn.execute("CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [ENTITY_AT])
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
        conn.execute("CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [ENTITY_AT])
    assert db.one("SELECT count(*) FROM public.acct") == len(fx["survivors"])
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True


def _crash_entity_trial(db: DB, seed: int) -> None:
    fx = _entity_fixture(db)
    victim = Victim(db, "CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [ENTITY_AT]).start()
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
    victim = Victim(installed, "CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [ENTITY_AT]).start()
    immediate_stop_during(installed, victim, lambda: (installed.one(
        "SELECT count(*) FROM pgretention.audit_log WHERE action = 'entity.delete'") or 0) >= 3, 0.1)
    assert installed.one("SELECT count(*) FROM pgretention.job_run WHERE status = 'running'") == 1
    _check_entities(installed, fx, killed=True)
