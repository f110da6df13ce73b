"""The partition interval tuner: its arithmetic, the observed rates, and --apply on a live table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgretention import generator as g
from tests.fix_db import DB, simulate

CLASSES = ('{"eu": {"drop_after": "6 months", "members": ["NL", "DE"]},'
           ' "intl": {"drop_after": "24 months"}}')
TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _create(db: DB, start: datetime, classes: str = CLASSES, premake: int = 4) -> None:
    db.execute("SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day', %s::jsonb,"
               " p_class_column => 'region', p_default_class => 'intl', p_start => %s, p_premake => %s)",
               [g.CDR_COLUMNS, classes, start, premake])


def _tune(db: DB, *args: Any) -> dict[tuple[str, str], dict[str, Any]]:
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM pgretention.tune(%s, %s, %s, %s::interval)", ["public.cdr", *args])
        return {(r["class_name"], str(r["candidate"])): r for r in cur.fetchall()}


def test_arithmetic_from_given_rates(installed: DB) -> None:
    _create(installed, TODAY)
    # nothing observed: the given 48M rows/day are split evenly over the two classes
    rows = _tune(installed, 48_000_000, 200, "2 days")
    assert len(rows) == 10
    day = rows[("eu", "1 day, 0:00:00")]
    assert day["rows_per_day"] == 24_000_000 and day["rate_source"] == "given, row bytes given"
    assert day["worst_case_overshoot"] == timedelta(days=1, hours=1)      # interval + schedule_max_gap (1 hour)
    assert day["premake"] == 2                                            # 2 days of ingest
    assert day["partitions_alive"] == 180 + 2                             # ceil(6 months / 1 day) + premake
    assert day["partition_rows"] == 24_000_000 and day["partition_bytes"] == 4_800_000_000
    assert day["drops_per_run"] == 1
    assert float(day["drop_ms_per_partition"]) == pytest.approx(3 + 0.085 * 182 + 0.3 * 64 + 250 * 4.8, abs=0.1)
    assert float(day["purge_ms_per_run"]) == float(day["drop_ms_per_partition"])
    hour = rows[("eu", "1:00:00")]
    assert (hour["premake"], hour["partitions_alive"], hour["fits_count"]) == (48, 4320 + 48, False)
    assert hour["drops_per_run"] == 1 and hour["partition_rows"] == 1_000_000
    six = rows[("eu", "6:00:00")]
    assert (six["premake"], six["partitions_alive"], six["fits_count"], six["fits_overshoot"]) == (8, 728, True, True)
    week = rows[("eu", "7 days, 0:00:00")]
    assert (week["premake"], week["fits_overshoot"]) == (1, False)
    # largest interval within 2 days of overshoot and 1000 partitions: 1 day for both classes
    assert [k for k, r in rows.items() if r["recommended"]] == [("eu", "1 day, 0:00:00"), ("intl", "1 day, 0:00:00")]
    assert [k for k, r in rows.items() if r["table_choice"]] == [("eu", "1 day, 0:00:00"), ("intl", "1 day, 0:00:00")]
    # 40 days allowed: a month per partition (30 days + 1 hour)
    rows = _tune(installed, 48_000_000, 200, "40 days")
    assert {k[0]: k[1] for k, r in rows.items() if r["recommended"]} == {"eu": "30 days, 0:00:00",
                                                                          "intl": "30 days, 0:00:00"}
    # 12 hours: 6-hour partitions fit eu (728) but not intl (2880 + 8): no table recommendation
    rows = _tune(installed, 48_000_000, 200, "12 hours")
    assert {k[0] for k, r in rows.items() if r["recommended"]} == {"eu"}
    assert not any(r["table_choice"] for r in rows.values())
    # a longer gap between runs: more partitions per run with short intervals, longer overshoot
    installed.execute("SELECT pgretention.setting_set('schedule_max_gap', '1 day')")
    rows = _tune(installed, 48_000_000, 200, "3 days")
    assert rows[("eu", "6:00:00")]["drops_per_run"] == 4
    assert rows[("eu", "1 day, 0:00:00")]["worst_case_overshoot"] == timedelta(days=2)


def test_observed_rates_and_refusals(installed: DB) -> None:
    _create(installed, TODAY - timedelta(days=4))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="public.cdr.*rows per day"):
        _tune(installed, None, None, None)
    g.load(installed.dsn, "public.cdr", TODAY - timedelta(days=4), 4, 24_000)
    installed.execute("ANALYZE public.cdr")
    rows = _tune(installed, None, None, None)
    day = {c: rows[(c, "1 day, 0:00:00")] for c in ("eu", "intl")}
    assert day["eu"]["rate_source"].startswith("observed (last 3 closed partitions)")
    share_eu = g.expected_country_shares()["NL"] + g.expected_country_shares()["DE"]
    assert day["eu"]["rows_per_day"] + day["intl"]["rows_per_day"] == pytest.approx(24_000, rel=0.01)
    assert day["eu"]["rows_per_day"] == pytest.approx(24_000 * share_eu, rel=0.05)
    assert 60 < day["eu"]["row_bytes"] < 300
    # a given table rate is split in the observed proportions
    rows = _tune(installed, 1_000_000, None, None)
    assert rows[("eu", "1 day, 0:00:00")]["rows_per_day"] == pytest.approx(1_000_000 * share_eu, rel=0.05)
    with pytest.raises(psycopg.errors.UndefinedTable, match="public.nope is not managed"):
        installed.execute("SELECT * FROM pgretention.tune('public.nope')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="shorter than 1 hour"):
        installed.execute("SELECT pgretention.table_set_interval('public.cdr', '30 minutes')")
    res = installed.cli("tune", "public.nope")
    assert res.returncode != 0 and "public.nope" in res.stderr
    # the operator reads the advice; only the admin applies it
    with installed.connect() as conn:
        conn.execute("SET ROLE pgretention_operator")
        assert conn.execute("SELECT count(*) FROM pgretention.tune('public.cdr')").fetchone() == (10,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pgretention.table_set_interval('public.cdr', '1 week')")
        conn.execute("RESET ROLE; SET ROLE pgretention_admin")
        assert conn.execute("SELECT pgretention.table_set_interval('public.cdr', '1 week')").fetchone()[0][
            "changed"] is True


def _leaves(db: DB, cls: str) -> list[tuple[datetime, datetime]]:
    return [(r[0], r[1]) for r in db.all(
        "SELECT lower_abs, upper_abs FROM pgretention._leaves((SELECT id FROM pgretention.managed_table), %s)"
        " WHERE NOT is_default ORDER BY lower_abs", [cls])]


def test_apply_changes_future_partitions_only(installed: DB) -> None:
    _create(installed, TODAY - timedelta(days=2), classes='{"eu": {"drop_after": "30 days", "members": ["NL", "DE"]},'
                                                          ' "intl": {"drop_after": "30 days"}}')
    g.load(installed.dsn, "public.cdr", TODAY - timedelta(days=2), 2, 5000)
    before = {c: _leaves(installed, c) for c in ("eu", "intl")}
    # 2.4M rows a day with at most 8 hours of overshoot: 6-hour partitions, premake 8 (2 days)
    res = installed.cli("--format", "json", "tune", "public.cdr", "--rows-per-day", "2400000", "--row-bytes", "150",
                        "--max-overshoot", "8 hours", "--apply", check=True)
    out = json.loads(res.stdout)
    assert out["recommendation"]["premake"] == 8 and out["applied"]["changed"] is True
    assert installed.one("SELECT partition_interval FROM pgretention.managed_table") == timedelta(hours=6)
    assert installed.one("SELECT premake FROM pgretention.managed_table") == 8
    assert installed.all("SELECT parent_table, partition_interval::interval, premake FROM partman.part_config"
                         " ORDER BY 1") == [("public.cdr_eu", timedelta(hours=6), 8),
                                            ("public.cdr_intl", timedelta(hours=6), 8)]
    audit = installed.one("SELECT details FROM pgretention.audit_log WHERE action = 'table.interval'")
    assert audit["old"]["interval"] == "1 day" and audit["new"]["premake"] == 8
    # existing partitions keep their bounds
    assert {c: _leaves(installed, c) for c in ("eu", "intl")} == before
    anchor = before["eu"][-1][1]
    # runs later on: new partitions continue from the last daily one, 6 hours each
    simulate(installed)
    ref = anchor - timedelta(hours=13)
    installed.execute("CALL pgretention.run(p_now => %s, p_table => 'public.cdr')", [ref])
    assert installed.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1") == "ok"
    for cls in ("eu", "intl"):
        leaves = _leaves(installed, cls)
        assert leaves[: len(before[cls])] == before[cls]
        new = leaves[len(before[cls]):]
        assert len(new) >= 6
        assert new[0][0] == anchor
        assert all(hi - lo == timedelta(hours=6) for lo, hi in new)
        assert all(a[1] == b[0] for a, b in zip(leaves, leaves[1:], strict=False))  # no gap, no overlap
        assert new[-1][1] >= ref + timedelta(days=2)                               # premake covers 2 days
    # rows for every hour up to the end of the premade range route to time partitions, none fails
    end = min(_leaves(installed, c)[-1][1] for c in ("eu", "intl"))
    with installed.connect() as conn:
        t, n = TODAY, 0
        while t < end:
            for region in ("NL", "US"):
                conn.execute("INSERT INTO public.cdr (id, region, started_at) VALUES (%s, %s, %s)", [-n - 1, region, t])
                n += 1
            t += timedelta(hours=1)
    assert installed.one("SELECT count(*) FROM public.cdr_eu_default") == 0
    assert installed.one("SELECT count(*) FROM public.cdr_intl_default") == 0
    # unchanged when applied again
    again = installed.cli("--format", "json", "tune", "public.cdr", "--rows-per-day", "2400000", "--row-bytes", "150",
                          "--max-overshoot", "8 hours", "--apply", check=True)
    assert json.loads(again.stdout)["applied"]["changed"] is False
    # nothing fits: refused, nothing changed
    bad = installed.cli("tune", "public.cdr", "--rows-per-day", "2400000", "--row-bytes", "150",
                        "--max-overshoot", "30 minutes", "--apply")
    assert bad.returncode != 0 and "nothing changed" in bad.stderr
    assert installed.one("SELECT partition_interval FROM pgretention.managed_table") == timedelta(hours=6)


def test_premake_at_an_unaligned_time_continues_the_grid(installed: DB) -> None:
    """pg_partman makes a partition from exactly the time it is given: a run at 05:13 must not make a
    partition from 05:13 (leaving 00:00-05:13 to the default partition) but continue at midnight."""
    _create(installed, TODAY, classes='{"eu": {"drop_after": "30 days", "members": ["NL"]},'
                                      ' "intl": {"drop_after": "30 days"}}')
    simulate(installed)
    last = _leaves(installed, "eu")[-1][1]
    for ref in (last - timedelta(days=3, hours=18, minutes=47), last + timedelta(days=2, hours=5, minutes=13)):
        installed.execute("CALL pgretention.run(p_now => %s, p_table => 'public.cdr')", [ref])
        for cls in ("eu", "intl"):
            leaves = _leaves(installed, cls)
            assert all(lo.hour == 0 and lo.minute == 0 and hi - lo == timedelta(days=1) for lo, hi in leaves)
            assert leaves[-1][1] > ref + timedelta(days=4)
    # after a pause longer than premake, the partitions from the run's day on are made (the days
    # missed in between are not: their rows, if any, are in the default partition)
    lows = [lo for lo, hi in _leaves(installed, "eu") if lo >= last]
    assert lows[:3] == [last, last + timedelta(days=2), last + timedelta(days=3)]


def test_bad_max_overshoot_is_named(installed: DB) -> None:
    res = installed.cli("tune", "public.cdr", "--max-overshoot", "banana")
    assert res.returncode == 6, res.stderr
    assert res.stderr == "pgretention: error: invalid --max-overshoot 'banana': expected an interval such as '2 days'\n"
