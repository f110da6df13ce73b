"""Concurrency of the anonymiser: a rewrite meets an application transaction on its partition."""

from __future__ import annotations

import threading

from tests.fix_cdr import daily_cdr
from tests.fix_db import DB


# -- the anonymiser meets an application transaction on the partition it rewrites ---------------------
def test_anonymiser_retries_a_partition_busy_with_a_late_write(installed: DB) -> None:
    db = installed
    at = daily_cdr(db, days=40, rows_per_day=100, drop_after="400 days")
    db.execute("SELECT pgretention.class_set('public.cdr', 'all', '400 days', '30 days')")
    db.execute("UPDATE cdr SET caller = 'secret ' || id")
    for col, method in (("caller", "redact"), ("callee", "e164_prefix"), ("id", "keep"), ("duration", "keep")):
        db.execute("SELECT pgretention.anon_rule_set('public.cdr', %s, %s)", [col, method])
    # the first partition the run will rewrite (an application lock on the parent would hold up every swap
    # before it; the anonymiser's prepare step is what meets the busy partition)
    leaf, lower = db.all("SELECT leaf::text, lower_abs FROM pgretention._anon_due(1, 'all', %s) ORDER BY lower_abs"
                         " LIMIT 1", [at])[0]
    due = len(db.all("SELECT 1 FROM pgretention._anon_due(1, 'all', %s)", [at]))
    old = db.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamptz - interval '31 days'", [at])
    # a loader writes a late record of that day straight into its partition (as bulk loaders do), in a
    # transaction that stays open for half a second: the partition is busy, the parent is not
    app = db.connect(autocommit=False)
    app.execute(f"INSERT INTO {leaf} (id, started_at, caller) VALUES (-1, %s::timestamptz + interval '1 hour',"  # noqa: S608
                " 'secret late')", [lower])
    timer = threading.Timer(0.5, app.commit)
    timer.start()
    try:
        with db.connect() as conn:
            conn.execute("CALL pgretention.anon_run(%s)", [at])
            conn.execute("CALL pgretention.anon_run(%s)", [at])
    finally:
        timer.join()
        app.close()
    assert db.one("SELECT count(*) FROM cdr WHERE id = -1") == 1
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state <> 'done'") == 0
    assert db.one("SELECT count(*) FROM pgretention.anon_op WHERE state = 'done'") == due
    assert db.one("SELECT count(*) FROM cdr WHERE caller LIKE 'secret%%' AND started_at < %s::timestamptz"
                  " - interval '31 days'", [at]) == 0
    assert db.one("SELECT count(*) FROM cdr WHERE started_at < %s::timestamptz - interval '31 days'", [at]) == old + 1
    assert db.one(f"SELECT count(*) FROM {leaf} WHERE caller = '[redacted]'") > 0  # noqa: S608 - a partition name
    assert db.one("SELECT count(*) FROM pg_class WHERE relname LIKE '%%pgr_anon'") == 0
