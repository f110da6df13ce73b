"""The report's data: what the SQL ``report_*`` functions return, and the pg_cron schedule.

:func:`collect` asks the database (and the pg_cron job, which may live in another database) and returns
plain data that :mod:`pgretention.report.html` and :mod:`pgretention.report.text` render.
:func:`schedule_findings` is the one check written in Python: pg_cron may live in another database
than the catalog, so the SQL ``report_check_*`` functions cannot see it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from pgretention import __version__, schedule
from pgretention.db import Conn, first_line, rows
from pgretention.errors import PgRetentionError

SEVERITIES = ("violation", "warning")
PURGE_DAYS = 90
HISTOGRAM_BUCKETS = 24


def schedule_findings(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings about the pg_cron job (it may live in another database than the catalog)."""
    base = {"section": "jobs", "object": job.get("job", "pg_cron"), "value": None}
    if job.get("error"):
        return [{**base, "severity": "warning", "check_name": "schedule_unknown",
                 "message": f"cannot read the pg_cron job: {job['error']}"}]
    if not job.get("pg_cron"):
        return [{**base, "severity": "warning", "check_name": "no_pg_cron",
                 "message": "pg_cron is not available: an external scheduler must run `pgretention run`"}]
    if not job.get("scheduled"):
        return [{**base, "severity": "violation", "check_name": "not_scheduled",
                 "message": f"pg_cron job {job['job']} is not scheduled (run `pgretention install`)"}]
    if not job.get("active"):
        return [{**base, "severity": "violation", "check_name": "paused",
                 "message": f"pg_cron job {job['job']} is paused (inactive): expired data is not removed"}]
    last = job.get("last_run") or {}
    if last.get("status") == "failed":
        return [{**base, "severity": "violation", "check_name": "cron_failed",
                 "message": f"the last pg_cron run failed: {(last.get('message') or '').strip()[:200]}"}]
    return []


def collect(conn: Conn, dsn: str | None, now: datetime | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data. ``now`` is the reference time (default: now)."""
    ref = now.isoformat() if now else None
    head = rows(conn, "SELECT current_database() AS database, coalesce(%s::timestamptz, now()) AS reference_time,"
                       " now() AS generated_at", [ref])[0]
    versions = {r["component"]: r["version"] for r in rows(conn, "SELECT * FROM pgretention.version_info()")}
    tables = rows(conn, """
        SELECT table_name, class_name, drop_after::text AS drop_after, anonymise_after::text AS anonymise_after,
               partition_interval::text AS partition_interval, worst_case_overshoot::text AS worst_case_overshoot,
               extract(epoch FROM drop_after)::float8 AS drop_after_seconds,
               extract(epoch FROM worst_case_overshoot)::float8 AS worst_case_overshoot_seconds,
               members, partitions, total_bytes, oldest_row,
               extract(epoch FROM oldest_row_age)::float8 AS oldest_row_age_seconds,
               rows_past_period, rows_past_overshoot, expired_partitions, default_rows, expired_default_rows,
               null_time_rows, pending_ops
        FROM pgretention.report_tables(%s)""", [ref])
    hist_rows = rows(conn, """
        SELECT table_name, class_name, bucket, extract(epoch FROM age_from)::float8 AS age_from_seconds,
               extract(epoch FROM age_to)::float8 AS age_to_seconds, rows, past_period, past_overshoot
        FROM pgretention.report_age_histogram(%s, %s) ORDER BY table_name, class_name, bucket""",
                      [ref, HISTOGRAM_BUCKETS])
    histograms: dict[str, list[dict[str, Any]]] = {}
    for r in hist_rows:
        histograms.setdefault(f"{r.pop('table_name')}:{r.pop('class_name')}", []).append(r)
    purges = rows(conn, "SELECT * FROM pgretention.report_purges(%s, %s)", [ref, PURGE_DAYS])
    findings = rows(conn, "SELECT * FROM pgretention.report_findings(%s)", [ref])
    try:
        job = schedule.job_state(dsn)
    except (PgRetentionError, psycopg.Error) as exc:  # e.g. a role that may not read cron.database_name
        job = {"pg_cron": None, "job": schedule.job_name(head["database"]), "error": first_line(exc)}
    findings = [f for f in findings if f["severity"] == "violation"] + schedule_findings(job) + \
        [f for f in findings if f["severity"] != "violation"]
    runs = rows(conn, """
        SELECT id, runner, status, started_at, finished_at, reference_time,
               (summary -> 'totals' ->> 'partitions_dropped')::int AS partitions_dropped,
               (summary -> 'totals' ->> 'rows_deleted')::bigint AS rows_deleted, message
        FROM pgretention.job_run ORDER BY id DESC LIMIT 20""")
    plan = rows(conn, "SELECT * FROM pgretention.plan(%s)", [ref])
    verify = rows(conn, "SELECT * FROM pgretention.audit_verify()")[0]
    actions = rows(conn, """
        SELECT action, count(*) AS records, min(at) AS first_at, max(at) AS last_at
        FROM pgretention.audit_log GROUP BY action ORDER BY action""")
    checkpoints = rows(conn, """
        SELECT id, at, details ->> 'first_kept_id' AS first_kept_id, details ->> 'records_removed' AS records_removed
        FROM pgretention.audit_log WHERE action = 'audit.checkpoint' ORDER BY id""")
    sections = {r["section"]: r["available"] for r in rows(conn, "SELECT * FROM pgretention.report_sections()")}
    optional: dict[str, Any] = {}
    if sections.get("subject_requests"):
        optional["subject_requests"] = rows(conn, "SELECT * FROM pgretention.report_subject_requests(%s)", [ref])
    if sections.get("legal_holds"):
        optional["legal_holds"] = rows(conn, "SELECT * FROM pgretention.report_holds(%s)", [ref])
    if sections.get("entity_rules"):
        optional["entity_rules"] = [r["rule"] for r in rows(
            conn, "SELECT r AS rule FROM pgretention.report_entity_rules(%s) r", [ref])]
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    return {
        "database": head["database"],
        "generated_at": head["generated_at"],
        "reference_time": head["reference_time"],
        "pgretention": __version__,
        "versions": versions,
        "summary": {"violations": counts["violation"], "warnings": counts["warning"],
                    "clean": counts["violation"] == 0, "classes": len(tables),
                    "audit_intact": bool(verify["ok"])},
        "findings": findings,
        "tables": tables,
        "histograms": histograms,
        "purges": purges,
        "jobs": {"schedule": job, "recent_runs": runs},
        "plan": plan,
        "audit": {"verify": verify, "actions": actions, "checkpoints": checkpoints},
        "sections": optional,
    }

