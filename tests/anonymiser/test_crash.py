"""Crash trials of the anonymiser: its run killed at a random moment.

Every trial starts ``run_anonymiser()`` in a :class:`~tests.fix_crash.Victim`, kills its backend after
a random delay drawn from the trial's seed, lets the next run finish the work, and checks the outcome
exactly: rows per partition, nothing identifying left past anonymise_after, nothing lost or
duplicated, nothing pending, the audit chain intact. Two seeds run in the default suite, 30 with
``-m slow`` (``make test-slow``). The server stopped at once during a copy is in test_anonymiser.py.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.fix_crash import Victim
from tests.fix_db import DB, simulate

# -- anonymiser: rewrite-and-swap of every partition past anonymise_after -----------------------------
ANON_COLUMNS = ("id bigint, started_at timestamptz NOT NULL, caller text, callee text, email text, cell_ip inet,"
                " content text, meta jsonb, duration int")
ANON_RULES = [("caller", "pseudonym", None), ("callee", "e164_prefix", "4"), ("email", "null", None),
              ("cell_ip", "ip_prefix", "24/48"), ("content", "redact", None), ("meta", "jsonb_drop", "imsi, imei"),
              ("id", "keep", None), ("duration", "keep", None)]
ANON_DAYS, ANON_PER_DAY = 60, 400


def _anon_fixture(db: DB) -> dict[str, Any]:
    """60 days of calls in daily partitions, anonymise after 30 days; the originals kept aside."""
    simulate(db)
    at = db.one("SELECT now()")
    db.execute("SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s,"
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
        db.execute("SELECT pgretention.anon_rule_set('public.cdr', %s, %s, %s)", [col, method, param])
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
        conn.execute("CALL pgretention.anon_run(%s)", [fx["at"]])
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
    assert db.one("SELECT ok FROM pgretention.audit_verify()") is True


def _crash_anonymiser_trial(db: DB, seed: int) -> None:
    fx = _anon_fixture(db)
    victim = Victim(db, "CALL pgretention.anon_run(%s)", [fx["at"]]).start()
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
