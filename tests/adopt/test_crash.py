"""Crash trials of adoption: ``adopt()`` killed at a random moment while the application inserts.

Every trial starts the adoption in a :class:`~tests.fix_crash.Victim`, kills its backend after a
random delay drawn from the trial's seed, resumes the documented way (cancel, adopt again), and
checks the outcome exactly: every row written there once, partitioned as expected, nothing pending,
the audit chain intact. Two seeds run in the default suite, 30 with ``-m slow``
(``make test-slow``); one more test stops the whole server at once (``immediate`` shutdown).
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from tests.fix_crash import Victim, durable_commits, immediate_stop_during, needs_local_cluster
from tests.fix_db import DB

# -- adoption of a plain table while the application inserts -----------------------------------------
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
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True


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
