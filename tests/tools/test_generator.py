"""The data generator (pgretention.generator): exact row counts, and the distributions it promises."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from pgretention import generator as g
from tests.fix_db import DB

START = datetime(2026, 3, 2, tzinfo=timezone.utc)
PER_DAY = 30_000
DAYS = 2
E164 = re.compile(r"^\+[1-9][0-9]{9,13}$")


@pytest.fixture
def cdr(db: DB) -> DB:
    db.execute(f"CREATE TABLE public.cdr ({g.CDR_COLUMNS})")
    opts = g.Options(late_fraction=0.05, null_fraction=0.01, late_max_days=7)
    res = g.load(db.dsn, "public.cdr", START, DAYS, PER_DAY, options=opts, jobs=2)
    assert (res.rows, res.first_id, res.last_id) == (DAYS * PER_DAY, 1, DAYS * PER_DAY)
    return db


def test_row_counts_ids_null_and_late_fractions(cdr: DB) -> None:
    n, distinct, lo, hi = cdr.all("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM public.cdr")[0]
    assert (n, distinct, lo, hi) == (DAYS * PER_DAY, DAYS * PER_DAY, 1, DAYS * PER_DAY)
    # day k holds ids k*PER_DAY+1 .. (k+1)*PER_DAY, dated on START + k days unless late or NULL
    nulls, late, min_early, max_early, outside = cdr.all(
        "WITH r AS (SELECT started_at, %(start)s::timestamptz + ((id - 1) / %(per)s) * interval '1 day' AS day"
        " FROM public.cdr)"
        " SELECT count(*) FILTER (WHERE started_at IS NULL),"
        "        count(*) FILTER (WHERE started_at < day),"
        "        min(ceil(extract(epoch FROM day - started_at) / 86400)) FILTER (WHERE started_at < day),"
        "        max(ceil(extract(epoch FROM day - started_at) / 86400)) FILTER (WHERE started_at < day),"
        "        count(*) FILTER (WHERE started_at >= day + interval '1 day')"
        " FROM r", {"start": START, "per": PER_DAY})[0]
    total = DAYS * PER_DAY
    assert abs(nulls / total - 0.01) < 0.003
    assert abs(late / total - 0.05) < 0.006
    assert (min_early, max_early) == (1, 7)  # 1 to late_max_days days early
    assert outside == 0


def test_diurnal_curve(cdr: DB) -> None:
    rows = dict(cdr.all("SELECT extract(hour FROM started_at)::int, count(*) FROM public.cdr"
                        " WHERE started_at IS NOT NULL GROUP BY 1"))
    total = sum(rows.values())
    expected = g.expected_hour_shares()
    for hour in range(24):
        assert abs(rows[hour] / total - expected[hour]) < 0.006, hour
    day = sum(rows[h] for h in range(9, 18)) / total      # 09:00-18:00
    night = sum(rows[h] for h in range(0, 6)) / total     # 00:00-06:00
    assert abs(day - sum(expected[9:18])) < 0.01
    assert abs(night - sum(expected[0:6])) < 0.01
    assert day > 0.55 and night < 0.07
    assert min(rows[h] for h in range(9, 18)) > 5 * max(rows[h] for h in range(0, 6))


def test_country_mix_numbers_durations_and_tenants(cdr: DB) -> None:
    total = DAYS * PER_DAY
    by_region = dict(cdr.all("SELECT region, count(*) FROM public.cdr GROUP BY 1"))
    expected = g.expected_country_shares()
    assert set(by_region) == set(expected)
    for iso, share in expected.items():
        assert abs(by_region[iso] / total - share) < 0.01, iso
    # the region is the caller's country, numbers are E.164 with the country's prefix
    prefixes = {c.iso: c.prefix for c in g.DEFAULT_COUNTRIES}
    sample = cdr.all("SELECT region, caller, callee FROM public.cdr ORDER BY id LIMIT 2000")
    for region, caller, callee in sample:
        assert caller.startswith(prefixes[region])
        assert E164.match(caller) and E164.match(callee), (caller, callee)
    callee_nl = cdr.one("SELECT avg((callee LIKE '+316%')::int)::float8 FROM public.cdr")
    assert abs(callee_nl - expected["NL"]) < 0.01
    zero, median, p99, top = cdr.all(
        "SELECT avg((duration_s = 0)::int)::float8,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) FILTER (WHERE duration_s > 0),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_s), max(duration_s) FROM public.cdr")[0]
    assert abs(zero - g.UNANSWERED_SHARE) < 0.01
    assert 60 <= median <= 90
    assert p99 > 8 * median            # heavy tail
    assert top <= g.DURATION_CAP_S
    tenants = cdr.all("SELECT tenant, count(*) FROM public.cdr GROUP BY 1 ORDER BY 2 DESC")
    assert len(tenants) == 50 and tenants[0][0] == "tenant-000"
    assert tenants[0][1] > 5 * tenants[-1][1]


def test_sms_email_and_same_rows_for_same_seed(db: DB) -> None:
    db.execute(f"CREATE TABLE public.sms ({g.SMS_COLUMNS}); CREATE TABLE public.sms2 ({g.SMS_COLUMNS});"
               f" CREATE TABLE public.mail ({g.EMAIL_COLUMNS})")
    for table in ("public.sms", "public.sms2", "public.mail"):
        g.load(db.dsn, table, START, 1, 1000, options=g.Options(seed=7))
    assert db.one("SELECT count(*) FROM (SELECT * FROM public.sms EXCEPT SELECT * FROM public.sms2) x") == 0
    assert db.one("SELECT count(*) FROM public.sms WHERE segments < 1 OR sender !~ '^\\+[1-9]'") == 0
    assert db.one("SELECT count(*) FROM public.mail WHERE sender !~ '^user[0-9]+@example\\.'"
                  " OR recipient !~ '^rcpt[0-9]+@example\\.' OR size_bytes <= 0") == 0
    g.load(db.dsn, "public.sms2", START, 1, 1000, options=g.Options(seed=8), first_id=1)
    assert db.one("SELECT count(*) FROM (SELECT * FROM public.sms2 EXCEPT SELECT * FROM public.sms) x") == 1000


def test_cli_generate_into_managed_table(installed: DB) -> None:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    installed.execute(
        "SELECT pgretention.table_create('public.cdr', %s, 'started_at', '1 day',"
        " '{\"eu\": {\"drop_after\": \"6 months\", \"members\": [\"NL\", \"DE\"]},"
        "   \"intl\": {\"drop_after\": \"24 months\"}}', p_class_column => 'region', p_default_class => 'intl',"
        " p_start => %s)", [g.CDR_COLUMNS, today - timedelta(days=3)])
    res = installed.cli("--format", "json", "generate", "public.cdr", "--days", "3", "--rows-per-day", "2000",
                        check=True)
    out = json.loads(res.stdout)
    assert out["rows"] == 6000 and out["from"] == (today - timedelta(days=2)).date().isoformat()
    assert installed.one("SELECT count(*) FROM public.cdr") == 6000
    # every row found its class and its daily partition: nothing in default partitions
    assert installed.one("SELECT count(*) FROM public.cdr_eu_default") == 0
    assert installed.one("SELECT count(*) FROM public.cdr_intl_default") == 0
    eu = installed.one("SELECT count(*) FROM public.cdr_eu")
    assert abs(eu / 6000 - 0.48) < 0.03
    bad = installed.cli("generate", "public.nope", "--days", "1", "--rows-per-day", "10")
    assert bad.returncode != 0 and "public.nope" in bad.stderr
