"""pg_cron jobs: one maintenance job per database, plus one that trims pg_cron's run history.

pg_cron lives in a single database (``cron.database_name``). When that is the target database the
jobs are created there; otherwise they are created from the cron database with
``cron.schedule_in_database`` (pg_cron 1.4+). Without pg_cron the fallback is the operator's own
scheduler running ``pgretention run`` (cron, a systemd timer).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from croniter import croniter
from psycopg.conninfo import make_conninfo

from pgretention.db import Conn, build_conninfo, connect, first_line
from pgretention.errors import InvalidInput, PermissionDenied

JOB_PREFIX = "pgretention:"
HISTORY_JOB = "pgretention:cron-history"
HISTORY_COMMAND = (
    "DELETE FROM cron.job_run_details WHERE coalesce(end_time, start_time) < now() - interval '30 days'"
    " AND jobid IN (SELECT jobid FROM cron.job WHERE jobname LIKE 'pgretention:%')"
)
FALLBACK = (
    "pg_cron is not available (add it to shared_preload_libraries and set cron.database_name); "
    "schedule `pgretention run` from cron or a systemd timer instead"
)


def validate(expr: str) -> None:
    if not isinstance(expr, str) or not croniter.is_valid(expr) or len(expr.split()) != 5:
        raise InvalidInput(f"invalid cron schedule {expr!r}: expected five fields like '7 * * * *'")


def max_gap(expr: str) -> str:
    """Longest gap between two runs of ``expr`` over four weeks, as an interval literal."""
    validate(expr)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    it = croniter(expr, start)
    prev = it.get_next(datetime)
    gap = timedelta(0)
    while prev < start + timedelta(days=28):
        nxt = it.get_next(datetime)
        gap = max(gap, nxt - prev)
        prev = nxt
    return f"{int(gap.total_seconds())} seconds"


def next_run(expr: str, after: datetime | None = None) -> datetime:
    base = after or datetime.now(timezone.utc)
    return croniter(expr, base).get_next(datetime)


def job_name(dbname: str) -> str:
    return f"{JOB_PREFIX}{dbname}"


def _cron_target(dsn: str | None) -> tuple[str, str | None, str]:
    """(target database, cron database or None when pg_cron is not loaded, conninfo)."""
    conninfo = build_conninfo(dsn)
    with connect(conninfo) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        try:
            with conn.transaction():
                cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]  # type: ignore[index]
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermissionDenied(
                "cannot read cron.database_name (needs pg_read_all_settings): pg_cron job state unknown"
            ) from exc
    return db, cron_db, conninfo


def _cron_conn(conninfo: str, cron_db: str) -> Conn:
    return connect(make_conninfo(conninfo, dbname=cron_db))


def _ensure_cron_extension(conn: Conn) -> bool:
    """Create pg_cron in the cron database when missing. Returns True when it was created."""
    if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:  # type: ignore[index]
        return False
    try:
        conn.execute("CREATE EXTENSION pg_cron")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionDenied(f"cannot create extension pg_cron: {first_line(exc)}") from exc
    return True


def _upsert_job(conn: Conn, name: str, expr: str, command: str, database: str) -> str:
    row = conn.execute(
        "SELECT jobid, schedule, command, database, active FROM cron.job WHERE jobname = %s AND username = current_user",
        [name],
    ).fetchone()
    if row and row[1] == expr and row[2] == command and row[3] == database and row[4]:
        return "unchanged"
    if row:
        conn.execute("SELECT cron.unschedule(%s::bigint)", [row[0]])
    conn.execute(
        "SELECT cron.schedule_in_database(%s, %s, %s, %s)", [name, expr, command, database]
    )
    return "updated" if row else "created"


def ensure_job(dsn: str | None) -> str:
    """Create or update this database's maintenance job. Returns a one-line description."""
    db, cron_db, conninfo = _cron_target(dsn)
    if not cron_db:
        return FALLBACK
    with connect(conninfo) as conn:
        expr = conn.execute("SELECT value FROM pgretention.setting WHERE name = 'schedule'").fetchone()[0]  # type: ignore[index]
    validate(expr)
    try:
        with _cron_conn(conninfo, cron_db) as cconn:
            _ensure_cron_extension(cconn)
            state = _upsert_job(cconn, job_name(db), expr, "CALL pgretention.run(p_runner => 'cron')", db)
            _upsert_job(
                cconn,
                HISTORY_JOB,
                "17 3 * * *",
                HISTORY_COMMAND,
                cron_db,
            )
    except psycopg.Error as exc:
        return f"pg_cron job not scheduled ({first_line(exc)}); {FALLBACK.split('; ', 1)[1]}"
    return f"pg_cron job {job_name(db)!r} {state} in database {cron_db} ({expr}, GMT)"


def remove_job(dsn: str | None) -> str:
    db, cron_db, conninfo = _cron_target(dsn)
    if not cron_db:
        return "no pg_cron"
    try:
        with _cron_conn(conninfo, cron_db) as cconn:
            if not cconn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]:  # type: ignore[index]
                return "no pg_cron jobs"
            n = 0
            for (jobid,) in cconn.execute(
                "SELECT jobid FROM cron.job WHERE jobname = %s AND username = current_user", [job_name(db)]
            ).fetchall():
                cconn.execute("SELECT cron.unschedule(%s::bigint)", [jobid])
                n += 1
            left = cconn.execute(
                "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pgretention:%%' AND jobname <> %s",
                [HISTORY_JOB],
            ).fetchone()[0]  # type: ignore[index]
            if left == 0:
                for (jobid,) in cconn.execute(
                    "SELECT jobid FROM cron.job WHERE jobname = %s", [HISTORY_JOB]
                ).fetchall():
                    cconn.execute("SELECT cron.unschedule(%s::bigint)", [jobid])
    except psycopg.Error as exc:
        return f"pg_cron job not removed: {first_line(exc)}"
    return f"removed {n} pg_cron job(s)"


def job_state(dsn: str | None) -> dict[str, Any]:
    """Schedule, active flag and the last run of this database's job (for status)."""
    try:
        db, cron_db, conninfo = _cron_target(dsn)
    except PermissionDenied as exc:
        return {"pg_cron": None, "job": None, "error": str(exc)}
    out: dict[str, Any] = {"pg_cron": bool(cron_db), "job": job_name(db)}
    if not cron_db:
        return out
    try:
        with _cron_conn(conninfo, cron_db) as cconn:
            row = cconn.execute(
                "SELECT jobid, schedule, active FROM cron.job WHERE jobname = %s", [job_name(db)]
            ).fetchone()
            if row is None:
                out["scheduled"] = False
                return out
            out.update(scheduled=True, schedule=row[1], active=row[2])
            last = cconn.execute(
                "SELECT status, start_time, end_time, return_message FROM cron.job_run_details"
                " WHERE jobid = %s ORDER BY start_time DESC LIMIT 1",
                [row[0]],
            ).fetchone()
            if last:
                out["last_run"] = {"status": last[0], "start": last[1], "end": last[2], "message": last[3]}
            if row[2]:
                out["next_run"] = next_run(row[1])
    except psycopg.Error as exc:
        out["error"] = first_line(exc)
    return out


__all__ = ["ensure_job", "remove_job", "job_state", "validate", "max_gap", "next_run"]
