"""Compliance report, metrics and job history: clean when nothing is wrong, flags planted violations,
the HTML page renders offline in headless Chromium with its charts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgretention import installer, schedule
from tests.fix_db import DB, ROOT

UTC = timezone.utc
OUT = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _report(db: DB, *args: str) -> dict[str, Any]:
    res = db.cli("report", "--format", "json", *args, check=True)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _checks(data: dict[str, Any], severity: str = "violation") -> set[tuple[str, str]]:
    return {(f["section"], f["check_name"]) for f in data["findings"] if f["severity"] == severity}


@pytest.fixture
def scene(db: DB) -> DB:
    """A CDR table with two classes, 60 days of calls, one real run, the pg_cron job scheduled."""
    installer.install(db.dsn)
    now = datetime.now(UTC)
    db.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, region text, started_at timestamptz, caller text',"
        " 'started_at', '1 day', %s, p_class_column => 'region', p_default_class => 'intl', p_start => %s)",
        [Jsonb({"eu": {"drop_after": "20 days", "members": ["NL", "DE"]}, "intl": {"drop_after": "40 days"}}),
         now - timedelta(days=60)])
    db.execute("INSERT INTO cdr SELECT g, CASE WHEN g %% 3 = 0 THEN 'US' ELSE 'NL' END,"
               " %s::timestamptz - g * interval '2 hours', 'c' || g FROM generate_series(1, 700) g", [now])
    db.execute("CALL pgretention.run(p_runner => 'test')")
    return db


def test_report_is_clean_then_flags_planted_violations(scene: DB) -> None:
    db = scene
    data = _report(db)
    assert data["summary"]["violations"] == 0, data["findings"]
    assert data["summary"]["clean"] is True and data["summary"]["audit_intact"] is True
    by_class = {t["class_name"]: t for t in data["tables"]}
    assert set(by_class) == {"eu", "intl"}
    for t in by_class.values():
        assert t["rows_past_overshoot"] == 0
        # rows past the period but within the overshoot are reported, not flagged
        cutoff = db.one("SELECT count(*) FROM cdr WHERE region = ANY(%s) AND started_at < now() - %s::interval",
                        [["NL", "DE"] if t["class_name"] == "eu" else ["US"], t["drop_after"]])
        assert t["rows_past_period"] == cutoff
    assert by_class["eu"]["drop_after"] == "20 days"
    # the histogram holds every row of the class, split at the retention line
    for key, rows in data["histograms"].items():
        table_name, cls = key.rsplit(":", 1)
        assert sum(b["rows"] for b in rows) == db.one(
            "SELECT count(*) FROM cdr WHERE region = ANY(%s)", [["NL", "DE"] if cls == "eu" else ["US"]])
        assert not any(b["past_overshoot"] and b["rows"] for b in rows)
    assert {p["action"] for p in data["purges"]} == {"partition.drop"}
    assert sum(p["operations"] for p in data["purges"]) == db.one(
        "SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'")
    assert db.cli("report", "--check").returncode == 0

    # plant: an old row in a default partition, a paused schedule, an overdue subject request
    db.execute("INSERT INTO cdr VALUES (9001, 'NL', now() - interval '200 days', 'old')")
    assert db.one("SELECT count(*) FROM cdr_eu_default") == 1
    with db.server.admin() as adm:
        job = adm.execute("SELECT jobid FROM cron.job WHERE jobname = %s", [schedule.job_name(db.name)]).fetchone()
        assert job is not None
        adm.execute("SELECT cron.alter_job(%s, active := false)", [job[0]])
    has_requests = db.one("SELECT to_regclass('pgretention.subject_request') IS NOT NULL")
    if has_requests:
        db.execute("INSERT INTO pgretention.subject_request (kind, identifiers, identifier_hashes, received_at, due_at)"
                   " VALUES ('erasure', '{}', '{}', now() - interval '40 days', now() - interval '10 days')")
    audit_before = db.one("SELECT count(*) FROM pgretention.audit_log")
    data = _report(db)
    expected = {("tables", "rows_past_period"), ("tables", "expired_default_rows"), ("jobs", "paused")}
    if has_requests:
        expected.add(("subject_requests", "overdue"))
    assert _checks(data) == expected
    assert data["summary"]["violations"] == len(expected) and data["summary"]["clean"] is False
    eu = next(t for t in data["tables"] if t["class_name"] == "eu")
    assert (eu["rows_past_overshoot"], eu["expired_default_rows"], eu["default_rows"]) == (1, 1, 1)
    eu_hist = data["histograms"]["public.cdr:eu"]
    assert sum(b["rows"] for b in eu_hist if b["past_overshoot"]) == 1
    # the report changes nothing
    assert db.one("SELECT count(*) FROM pgretention.audit_log") == audit_before
    assert db.one("SELECT count(*) FROM cdr_eu_default") == 1
    res = db.cli("report", "--check")
    assert res.returncode == 1
    assert res.stderr.strip() == f"pgretention: error: the report has {len(expected)} violation(s)"
    text = db.cli("report", check=True).stdout
    assert "VIOLATION" in text and "paused" in text

    # metrics carry the same facts
    metrics = db.cli("metrics", check=True).stdout
    assert 'pgretention_expired_default_rows{table_name="public.cdr",class_name="eu"} 1' in metrics
    assert 'pgretention_rows_past_overshoot{table_name="public.cdr",class_name="eu"} 1' in metrics
    assert 'pgretention_findings{section="tables",severity="violation"} 2' in metrics
    dropped = db.one("SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'")
    assert f'pgretention_actions_total{{action="partition.drop",object="public.cdr"}} {dropped}' in metrics
    if has_requests:
        assert 'pgretention_requests_overdue{kind="erasure"} 1' in metrics
    assert re.search(r"^pgretention_last_success_timestamp_seconds \d+", metrics, re.M)
    _assert_prometheus_format(metrics)


def _assert_prometheus_format(text: str) -> None:
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
        elif not line.startswith("#"):
            m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? (-?[0-9.e+]+|NaN)', line)
            assert m, line
            assert m.group(1) in declared, line


def test_metrics_textfile_and_roles(scene: DB, tmp_path: Path) -> None:
    db = scene
    target = tmp_path / "pgretention.prom"
    db.cli("metrics", "--textfile", str(target), check=True)
    assert "pgretention_up 1" in target.read_text()
    res = db.cli("metrics", "--textfile", str(tmp_path / "metrics.txt"))
    assert res.returncode == 6 and "must end in .prom" in res.stderr
    db.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monitor') THEN"
               " CREATE ROLE monitor LOGIN; END IF; END$$; GRANT pgretention_auditor TO monitor")
    try:
        with psycopg.connect(db.dsn_as("monitor"), autocommit=True) as conn:
            for view in ("metrics_class", "metrics_action", "metrics_run", "metrics_finding", "metrics_request"):
                conn.execute(sql.SQL("SELECT * FROM pgretention.{}").format(sql.Identifier(view))).fetchall()
            assert conn.execute("SELECT count(*) FROM pgretention.report_findings()").fetchone() is not None
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pgretention.audit_retention()")
        res = db.cli("report", "--format", "json", dsn=db.dsn_as("monitor"))
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert data["summary"]["violations"] == 0
        assert len(data["tables"]) == 2
    finally:
        db.execute("DROP OWNED BY monitor; DROP ROLE monitor")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (scripts/setup.sh)")
def test_html_report_renders_offline_in_headless_chromium(scene: DB) -> None:
    db = scene
    db.execute("INSERT INTO cdr VALUES (9001, 'NL', now() - interval '200 days', 'old')")
    OUT.mkdir(exist_ok=True)
    page = OUT / "compliance-report.html"
    res = db.cli("report", "--format", "html", "--output", str(page), check=True)
    assert "2 violation(s)" in res.stdout
    source = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source), "external resource in the report"
    assert "@import" not in source and "url(" not in source
    with tempfile.TemporaryDirectory() as profile:
        flags = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2600",
                 "--virtual-time-budget=3000"]
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        shot = OUT / "compliance-report.png"
        shot.unlink(missing_ok=True)
        subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 20_000
    assert 'id="summary" data-violations="2"' in dom  # rows past the period, expired in default
    charts = re.findall(r'<svg class="chart age-histogram" data-table="public.cdr" data-class="(\w+)"[^>]*'
                        r'data-rendered="(\d+)x(\d+)"', dom)
    assert sorted(c[0] for c in charts) == ["eu", "intl"]
    assert all(int(w) > 300 and int(h) > 150 for _, w, h in charts)
    assert dom.count('class="retention-line"') == 2 and dom.count('class="overshoot-line"') == 2
    bars = [int(n) for n in re.findall(r'<rect class="bar" data-rows="(\d+)"', dom)]
    assert sum(bars) == db.one("SELECT count(*) FROM cdr")
    assert re.search(r'<svg class="chart purges"[^>]*data-rendered="(\d{3,})x', dom)
    assert re.search(r'<rect class="bar" data-day="[0-9-]+" data-object="public.cdr"', dom)
    assert '<tr data-check="expired_default_rows">' in dom


def test_job_history_is_trimmed(db: DB) -> None:
    """pgretention.job_run by every run (job_history_keep); pg_cron's run details by the history job."""
    installer.install(db.dsn, cron_schedule="7 * * * *")
    db.execute("INSERT INTO pgretention.job_run (started_at, finished_at, runner, reference_time, status)"
               " VALUES (now() - interval '100 days', now() - interval '100 days', 'test', now() - interval '100 days',"
               " 'ok'), (now() - interval '10 days', now() - interval '10 days', 'test', now() - interval '10 days', 'ok')")
    db.execute("CALL pgretention.run(p_runner => 'test')")
    assert db.one("SELECT count(*) FROM pgretention.job_run WHERE started_at < now() - interval '90 days'") == 0
    assert db.one("SELECT count(*) FROM pgretention.job_run") == 2
    with db.server.admin() as adm:
        job = adm.execute("SELECT jobid, schedule, command, database FROM cron.job WHERE jobname = %s",
                          [schedule.HISTORY_JOB]).fetchone()
        assert job is not None and job[1] == "17 3 * * *" and job[3] == adm.info.dbname
        ours = adm.execute("SELECT jobid FROM cron.job WHERE jobname = %s", [schedule.job_name(db.name)]).fetchone()
        assert ours is not None
        adm.execute("SELECT cron.schedule('their-history-job', '0 4 1 1 *', 'SELECT 1')")
        ids: list[int] = []
        try:
            theirs = adm.execute("SELECT jobid FROM cron.job WHERE jobname = 'their-history-job'").fetchone()
            assert theirs is not None
            rows = [(ours[0], 40, "succeeded"), (ours[0], 5, "succeeded"), (ours[0], 45, "failed"),
                    (theirs[0], 40, "succeeded")]
            for jobid, days, status in rows:
                start = datetime.now(UTC) - timedelta(days=days)
                end = None if status == "failed" else start + timedelta(seconds=3)
                rid = adm.execute("INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command,"
                                  " status, return_message, start_time, end_time) VALUES (%s, 0, %s, current_user,"
                                  " 'x', %s, '', %s, %s) RETURNING runid", [jobid, db.name, status, start, end]).fetchone()
                assert rid is not None
                ids.append(rid[0])
            adm.execute(job[2])  # what the history job runs every night
            left = {r[0] for r in adm.execute("SELECT runid FROM cron.job_run_details WHERE runid = ANY(%s)",
                                              [ids]).fetchall()}
            assert left == {ids[1], ids[3]}  # recent ones and other people's history stay
        finally:
            adm.execute("DELETE FROM cron.job_run_details WHERE runid = ANY(%s)", [ids])
            adm.execute("SELECT cron.unschedule('their-history-job')")


def test_checks_are_pluggable_and_a_failing_check_does_not_stop_the_report(installed: DB) -> None:
    installed.execute("""
        CREATE FUNCTION pgretention.report_check_zz_custom(p_now timestamptz)
        RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
        LANGUAGE sql AS $$ SELECT 'custom', 'violation', 'thing', 'custom_rule', 'a custom rule is broken', 7::bigint $$;
        CREATE FUNCTION pgretention.report_check_zz_broken(p_now timestamptz)
        RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
        LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$""")
    rows = installed.all("SELECT section, severity, check_name, message, value FROM pgretention.report_findings()")
    assert ("custom", "violation", "custom_rule", "a custom rule is broken", 7) in rows
    assert ("report", "warning", "check_failed", "check report_check_zz_broken failed: boom", None) in rows
    assert rows[0][1] == "violation"
    assert installed.one("SELECT findings FROM pgretention.metrics_finding"
                         " WHERE section = 'custom' AND severity = 'violation'") == 1


def test_columns_without_anonymisation_rules_are_reported(installed: DB) -> None:
    if installed.one("SELECT to_regclass('pgretention.anon_rule') IS NULL"):
        pytest.skip("the anonymiser is not installed")
    installed.execute(
        "SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz, caller text, cell text',"
        " 'started_at', '1 day', %s)", [Jsonb({"default": {"drop_after": "13 months", "anonymise_after": "3 months"}})])
    installed.execute("INSERT INTO pgretention.anon_rule (table_id, column_name, method)"
                      " SELECT id, 'caller', 'pseudonym' FROM pgretention.managed_table")
    rows = installed.all("SELECT object, check_name, message FROM pgretention.report_findings()"
                         " WHERE section = 'anonymisation' ORDER BY message")
    assert [r[2].split(" has ")[0] for r in rows] == ["column cell", "column id"]
    assert all(r[:2] == ("public.cdr", "column_without_rule") for r in rows)
