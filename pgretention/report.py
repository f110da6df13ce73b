"""The compliance report and the metrics, gathered from the database.

:func:`collect` asks the SQL functions of ``sql/report/`` (and the pg_cron schedule,
which may live in another database) and returns plain data; :func:`render_html` turns it into one
self-contained HTML page (inline CSS and SVG charts, no external resources) and
:func:`prometheus_text` reads the metrics views into the Prometheus text exposition format.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgretention import __version__, schedule
from pgretention.db import Conn, first_line, translated
from pgretention.errors import PgRetentionError

SEVERITIES = ("violation", "warning")
PURGE_DAYS = 90
HISTOGRAM_BUCKETS = 24


# -- gathering ------------------------------------------------------------------------------------
def _rows(conn: Conn, query: str, params: Any = None) -> list[dict[str, Any]]:
    with translated(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, timedelta):
        return v.total_seconds()
    return float(v)


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
    head = _rows(conn, "SELECT current_database() AS database, coalesce(%s::timestamptz, now()) AS reference_time,"
                       " now() AS generated_at", [ref])[0]
    versions = {r["component"]: r["version"] for r in _rows(conn, "SELECT * FROM pgretention.version_info()")}
    tables = _rows(conn, """
        SELECT table_name, class_name, drop_after::text AS drop_after, anonymise_after::text AS anonymise_after,
               partition_interval::text AS partition_interval, worst_case_overshoot::text AS worst_case_overshoot,
               extract(epoch FROM drop_after)::float8 AS drop_after_seconds,
               extract(epoch FROM worst_case_overshoot)::float8 AS worst_case_overshoot_seconds,
               members, partitions, total_bytes, oldest_row,
               extract(epoch FROM oldest_row_age)::float8 AS oldest_row_age_seconds,
               rows_past_period, rows_past_overshoot, expired_partitions, default_rows, expired_default_rows,
               null_time_rows, pending_ops
        FROM pgretention.report_tables(%s)""", [ref])
    hist_rows = _rows(conn, """
        SELECT table_name, class_name, bucket, extract(epoch FROM age_from)::float8 AS age_from_seconds,
               extract(epoch FROM age_to)::float8 AS age_to_seconds, rows, past_period, past_overshoot
        FROM pgretention.report_age_histogram(%s, %s) ORDER BY table_name, class_name, bucket""",
                      [ref, HISTOGRAM_BUCKETS])
    histograms: dict[str, list[dict[str, Any]]] = {}
    for r in hist_rows:
        histograms.setdefault(f"{r.pop('table_name')}:{r.pop('class_name')}", []).append(r)
    purges = _rows(conn, "SELECT * FROM pgretention.report_purges(%s, %s)", [ref, PURGE_DAYS])
    findings = _rows(conn, "SELECT * FROM pgretention.report_findings(%s)", [ref])
    try:
        job = schedule.job_state(dsn)
    except (PgRetentionError, psycopg.Error) as exc:  # e.g. a role that may not read cron.database_name
        job = {"pg_cron": None, "job": schedule.job_name(head["database"]), "error": first_line(exc)}
    findings = [f for f in findings if f["severity"] == "violation"] + schedule_findings(job) + \
        [f for f in findings if f["severity"] != "violation"]
    runs = _rows(conn, """
        SELECT id, runner, status, started_at, finished_at, reference_time,
               (summary -> 'totals' ->> 'partitions_dropped')::int AS partitions_dropped,
               (summary -> 'totals' ->> 'rows_deleted')::bigint AS rows_deleted, message
        FROM pgretention.job_run ORDER BY id DESC LIMIT 20""")
    plan = _rows(conn, "SELECT * FROM pgretention.plan(%s)", [ref])
    verify = _rows(conn, "SELECT * FROM pgretention.verify_audit()")[0]
    actions = _rows(conn, """
        SELECT action, count(*) AS records, min(at) AS first_at, max(at) AS last_at
        FROM pgretention.audit_log GROUP BY action ORDER BY action""")
    checkpoints = _rows(conn, """
        SELECT id, at, details ->> 'first_kept_id' AS first_kept_id, details ->> 'records_removed' AS records_removed
        FROM pgretention.audit_log WHERE action = 'audit.checkpoint' ORDER BY id""")
    sections = {r["section"]: r["available"] for r in _rows(conn, "SELECT * FROM pgretention.report_sections()")}
    optional: dict[str, Any] = {}
    if sections.get("subject_requests"):
        optional["subject_requests"] = _rows(conn, "SELECT * FROM pgretention.report_subject_requests(%s)", [ref])
    if sections.get("legal_holds"):
        optional["legal_holds"] = _rows(conn, "SELECT * FROM pgretention.report_holds(%s)", [ref])
    if sections.get("entity_rules"):
        optional["entity_rules"] = [r["rule"] for r in _rows(
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


# -- HTML -----------------------------------------------------------------------------------------
CSS = """
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#d9e0e7; --bg:#f5f7fa; --card:#fff; --blue:#2f6db5;
        --amber:#d9902f; --red:#c23b3b; --green:#2e8b57; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#17324d; color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; letter-spacing:.2px; }
header .meta { color:#c5d3e0; font-size:13px; }
main { padding:20px 36px 40px; max-width:1280px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px;
          margin:0 0 18px; }
h2 { font-size:16px; margin:0 0 12px; font-weight:600; }
h3 { font-size:14px; margin:14px 0 6px; font-weight:600; }
.cards { display:flex; gap:14px; flex-wrap:wrap; margin:0 0 18px; }
.card { flex:1 1 170px; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
.card .n { font-size:26px; font-weight:650; }
.card .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.6px; }
.card.bad { border-left:5px solid var(--red); } .card.bad .n { color:var(--red); }
.card.good { border-left:5px solid var(--green); } .card.good .n { color:var(--green); }
.card.warn { border-left:5px solid var(--amber); } .card.warn .n { color:var(--amber); }
.card.small .n { font-size:17px; padding:6px 0 5px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.sev { display:inline-block; padding:1px 8px; border-radius:10px; font-size:11px; font-weight:600;
       text-transform:uppercase; letter-spacing:.4px; }
.sev.violation { background:#fbe3e3; color:var(--red); } .sev.warning { background:#fdf0dc; color:#9a5d0c; }
.ok { color:var(--green); font-weight:600; } .bad { color:var(--red); font-weight:600; }
.charts { display:grid; grid-template-columns:repeat(auto-fill, minmax(560px, 1fr)); gap:14px; }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:8px 10px 4px; }
figcaption { font-size:12.5px; color:var(--muted); margin:0 0 4px; }
figcaption b { color:var(--ink); }
svg text { font-family: inherit; }
.empty { color:var(--muted); font-style:italic; }
footer { color:var(--muted); font-size:12px; padding:0 36px 30px; }
"""

PALETTE = ("#2f6db5", "#6a4fb3", "#2e8b8b", "#b3577a", "#7c8a2e", "#c27a2c", "#4f7fa8", "#8a5a44")


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


def _days(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    d = seconds / 86400
    if d < 10 and abs(d - round(d)) > 0.05:
        return f"{d:,.1f} d"
    return f"{d:,.0f} d"


def _duration(seconds: float | None) -> str:
    """1 d 1 h, 20 d, 3 h 30 min."""
    if seconds is None:
        return "–"
    total = int(round(seconds / 60))
    days, rest = divmod(total, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days:,} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or "0 min"


def _interval(text: Any) -> str:
    """PostgreSQL's interval text, readable: '13 mons' -> '13 months', '1 day 01:00:00' -> '1 day 1 h'."""
    if text is None:
        return "–"
    out = re.sub(r"\b(\d+) mons?\b", lambda m: f"{m.group(1)} month" + ("" if m.group(1) == "1" else "s"), str(text))
    m = re.search(r"(\d+):(\d\d):(\d\d)$", out)
    if m:
        h, mi = int(m.group(1)), int(m.group(2))
        clock = " ".join(p for p in (f"{h} h" if h else "", f"{mi} min" if mi else "") if p)
        out = (out[:m.start()].strip() + " " + clock).strip()
    return out


def _size(n: Any) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], *, num: Iterable[str] = (),
           cls: str = "") -> str:
    if not rows:
        return '<p class="empty">none</p>'
    nums = set(num)
    head = "".join(f'<th class="{"num" if k in nums else ""}">{_e(label)}</th>' for k, label in columns)
    body = []
    for r in rows:
        cells = []
        for k, _label in columns:
            v = r.get(k)
            if k == "severity":
                cells.append(f'<td><span class="sev {_e(v)}">{_e(v)}</span></td>')
            else:
                cells.append(f'<td class="{"num" if k in nums else ""}">{_e(_fmt(v))}</td>')
        body.append(f'<tr data-check="{_e(r.get("check_name", ""))}">{"".join(cells)}</tr>')
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return float(m * exp)
    return float(10 * exp)


def _short(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:g}{unit}"
    return f"{n:g}"


def age_histogram_svg(key: str, buckets: list[dict[str, Any]], drop_after_s: float, overshoot_s: float) -> str:
    """Rows per age bucket, with the retention line (drop_after) and the worst-case line."""
    w, h, left, right, top, bottom = 560, 244, 56, 14, 34, 40
    pw, ph = w - left - right, h - top - bottom
    table_name, _, class_name = key.rpartition(":")
    xmax = max((b["age_to_seconds"] for b in buckets), default=1.0) or 1.0
    ymax = _nice_max(max((float(b["rows"]) for b in buckets), default=0.0))
    parts = [f'<svg class="chart age-histogram" data-table="{_e(table_name)}" data-class="{_e(class_name)}" '
             f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="Age distribution of {_e(key)} against its retention">']
    for i in range(5):
        y = top + ph - ph * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#e6ebf0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10.5" text-anchor="end" fill="#5b6b7c">'
                     f'{_short(ymax * i / 4)}</text>')
    for b in buckets:
        x0 = left + pw * b["age_from_seconds"] / xmax
        x1 = left + pw * b["age_to_seconds"] / xmax
        n = float(b["rows"])
        bh = ph * n / ymax
        if b["past_overshoot"] and n > 0:  # rows that break the promise stay visible however few
            bh = max(bh, 4.0)
            parts.append(f'<text class="violation-label" x="{(x0 + x1) / 2:.1f}" y="{top + ph - bh - 4:.1f}" '
                         f'font-size="10.5" font-weight="600" text-anchor="middle" fill="#c23b3b">{int(n):,}</text>')
        color = "#c23b3b" if b["past_overshoot"] else "#d9902f" if b["past_period"] else "#2f6db5"
        parts.append(f'<rect class="bar" data-rows="{int(n)}" x="{x0 + 0.5:.1f}" y="{top + ph - bh:.1f}" '
                     f'width="{max(x1 - x0 - 1, 0.5):.1f}" height="{bh:.1f}" fill="{color}">'
                     f'<title>{_days(b["age_from_seconds"])} – {_days(b["age_to_seconds"])}: {int(n):,} rows</title>'
                     f'</rect>')
    for secs, cls, label, dash, color in ((drop_after_s, "retention-line", "retention", "", "#c23b3b"),
                                          (drop_after_s + overshoot_s, "overshoot-line", "worst case", "5,4",
                                           "#7a1f1f")):
        x = left + pw * secs / xmax
        parts.append(f'<line class="{cls}" x1="{x:.1f}" y1="{top - 26}" x2="{x:.1f}" y2="{top + ph}" stroke="{color}" '
                     f'stroke-width="1.6" stroke-dasharray="{dash}"/>')
        right_side = x > left + pw * 0.7
        anchor = "end" if right_side else "start"
        dx = -4 if right_side else 4
        y_label = top - 14 if cls == "retention-line" else top - 3
        parts.append(f'<text x="{x + dx:.1f}" y="{y_label}" font-size="10.5" text-anchor="{anchor}" '
                     f'fill="{color}">{label} {_days(secs)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{w - right}" y2="{top + ph}" stroke="#8796a5"/>')
    for i in range(6):
        secs = xmax * i / 5
        x = left + pw * i / 5
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" font-size="10.5" text-anchor="middle" fill="#5b6b7c">'
                     f'{_days(secs)}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 6}" font-size="11" text-anchor="middle" fill="#5b6b7c">'
                 f'age of rows</text>')
    parts.append("</svg>")
    return "".join(parts)


def purges_svg(purges: list[dict[str, Any]], ref: datetime, days: int = PURGE_DAYS) -> str:
    """Rows removed per day (stacked by table) over the last ``days`` days."""
    w, h, left, right, top, bottom = 1140, 240, 60, 180, 14, 36
    pw, ph = w - left - right, h - top - bottom
    end = ref.astimezone(timezone.utc).date()
    start = end - timedelta(days=days - 1)
    objects = sorted({str(p["object"]) for p in purges})
    per_day: dict[date, dict[str, float]] = {}
    for p in purges:
        day = p["day"]
        if start <= day <= end:
            per_day.setdefault(day, {}).setdefault(str(p["object"]), 0.0)
            per_day[day][str(p["object"])] += float(p["rows"])
    ymax = _nice_max(max((sum(v.values()) for v in per_day.values()), default=0.0))
    bw = pw / days
    parts = [f'<svg class="chart purges" viewBox="0 0 {w} {h}" width="100%" role="img" '
             f'aria-label="Rows removed per day over the last {days} days">']
    for i in range(5):
        y = top + ph - ph * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e6ebf0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10.5" text-anchor="end" fill="#5b6b7c">'
                     f'{_short(ymax * i / 4)}</text>')
    for day, by_obj in sorted(per_day.items()):
        x = left + bw * (day - start).days
        y = top + ph
        for obj in objects:
            n = by_obj.get(obj, 0.0)
            if n <= 0:
                continue
            bh = ph * n / ymax
            y -= bh
            color = PALETTE[objects.index(obj) % len(PALETTE)]
            parts.append(f'<rect class="bar" data-day="{day.isoformat()}" data-object="{_e(obj)}" data-rows="{int(n)}" '
                         f'x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
                         f'fill="{color}"><title>{day.isoformat()} {_e(obj)}: {int(n):,} rows</title></rect>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#8796a5"/>')
    for i in range(0, days, max(days // 6, 1)):
        d = start + timedelta(days=i)
        parts.append(f'<text x="{left + bw * (i + 0.5):.1f}" y="{top + ph + 15}" font-size="10.5" '
                     f'text-anchor="middle" fill="#5b6b7c">{d.isoformat()}</text>')
    for i, obj in enumerate(objects[:10]):
        y = top + 6 + i * 18
        parts.append(f'<rect x="{left + pw + 16}" y="{y}" width="11" height="11" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{left + pw + 32}" y="{y + 10}" font-size="11" fill="#1d2733">{_e(obj)}</text>')
    if not per_day:
        parts.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" text-anchor="middle" '
                     f'fill="#5b6b7c">nothing removed in this period</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(data: dict[str, Any]) -> str:
    s = data["summary"]
    ref: datetime = data["reference_time"]
    cards = [
        ("violations", s["violations"], "bad" if s["violations"] else "good"),
        ("warnings", s["warnings"], "warn" if s["warnings"] else "good"),
        ("classes reported", s["classes"], ""),
        ("audit chain", "intact" if s["audit_intact"] else "BROKEN", "good" if s["audit_intact"] else "bad"),
    ]
    last_ok = next((r for r in data["jobs"]["recent_runs"] if r["status"] in ("ok", "partial")), None)
    cards.append(("last successful run", _fmt(last_ok["started_at"]) if last_ok else "never",
                  "small" if last_ok else "bad"))
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pgretention compliance report – {_e(data['database'])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>Data retention compliance report</h1>",
        f'<div class="meta">database <b>{_e(data["database"])}</b> · reference time {_e(_fmt(ref))} · '
        f'generated {_e(_fmt(data["generated_at"]))} · pgretention {_e(data["pgretention"])} · PostgreSQL '
        f'{_e(data["versions"].get("server"))}</div></header><main>',
        f'<div class="cards" id="summary" data-violations="{s["violations"]}" data-warnings="{s["warnings"]}" '
        f'data-clean="{str(s["clean"]).lower()}">',
    ]
    for label, value, cls in cards:
        out.append(f'<div class="card {cls}"><div class="n">{_e(value)}</div><div class="l">{_e(label)}</div></div>')
    out.append("</div>")

    out.append('<section id="findings"><h2>Findings</h2>')
    if data["findings"]:
        out.append(_table(data["findings"], [("severity", "severity"), ("section", "section"), ("object", "object"),
                                             ("check_name", "check"), ("message", "finding")]))
    else:
        out.append('<p class="ok">No violations and no warnings: nothing is kept longer than promised.</p>')
    out.append("</section>")

    rows = [{**t, "drop_after": _interval(t["drop_after"]), "partition_interval": _interval(t["partition_interval"]),
             "worst_case_overshoot": _duration(t["worst_case_overshoot_seconds"]),
             "oldest": _duration(t["oldest_row_age_seconds"]), "size": _size(t["total_bytes"])}
            for t in data["tables"]]
    out.append('<section id="retention"><h2>Retention per table and class</h2>')
    out.append(_table(rows, [
        ("table_name", "table"), ("class_name", "class"), ("drop_after", "promised period"),
        ("partition_interval", "partition"), ("worst_case_overshoot", "worst-case overshoot"),
        ("oldest", "oldest row age"), ("partitions", "partitions"), ("size", "size"),
        ("rows_past_period", "rows past period"), ("rows_past_overshoot", "past period + overshoot (must be 0)"),
        ("default_rows", "rows in default"), ("expired_default_rows", "expired in default"),
        ("null_time_rows", "no timestamp"), ("pending_ops", "pending drops")],
        num=("partitions", "rows_past_period", "rows_past_overshoot", "default_rows", "expired_default_rows",
             "null_time_rows", "pending_ops")))
    out.append("<h3>Age of rows against the retention line</h3>")
    if data["histograms"]:
        out.append('<div class="charts">')
        by_key = {f"{t['table_name']}:{t['class_name']}": t for t in data["tables"]}
        for key, buckets in data["histograms"].items():
            t = by_key.get(key)
            if t is None:
                continue
            total = sum(int(b["rows"]) for b in buckets)
            out.append(f'<figure><figcaption><b>{_e(key)}</b> · {total:,} rows · kept {_e(_interval(t["drop_after"]))}, '
                       f'worst case + {_e(_duration(t["worst_case_overshoot_seconds"]))}</figcaption>')
            out.append(age_histogram_svg(key, buckets, float(t["drop_after_seconds"]),
                                         float(t["worst_case_overshoot_seconds"])))
            out.append("</figure>")
        out.append("</div>")
    else:
        out.append('<p class="empty">no managed tables</p>')
    out.append("</section>")

    out.append(f'<section id="purges"><h2>Rows removed per day (last {PURGE_DAYS} days)</h2>')
    out.append(purges_svg(data["purges"], ref))
    out.append("</section>")

    job = data["jobs"]["schedule"]
    out.append('<section id="jobs"><h2>Maintenance jobs</h2>')
    if job.get("pg_cron") and job.get("scheduled"):
        state = '<span class="ok">active</span>' if job.get("active") else '<span class="bad">paused</span>'
        out.append(f"<p>pg_cron job <b>{_e(job['job'])}</b>, schedule <code>{_e(job.get('schedule'))}</code> "
                   f"(GMT): {state}; next run {_e(_fmt(job.get('next_run')))}.</p>")
    elif job.get("pg_cron"):
        out.append(f'<p class="bad">pg_cron job {_e(job["job"])} is not scheduled.</p>')
    else:
        out.append('<p>pg_cron is not available; runs come from an external scheduler.</p>')
    out.append(_table(data["jobs"]["recent_runs"], [
        ("id", "run"), ("runner", "runner"), ("status", "status"), ("started_at", "started"),
        ("reference_time", "reference time"), ("partitions_dropped", "partitions dropped"),
        ("rows_deleted", "rows deleted"), ("message", "message")], num=("id", "partitions_dropped", "rows_deleted")))
    out.append("<h3>What the next run would remove</h3>")
    out.append(_table(data["plan"], [("table_name", "table"), ("class_name", "class"), ("partition", "partition"),
                                     ("range_from", "from"), ("range_to", "to"), ("action", "action"),
                                     ("rows_estimate", "rows")], num=("rows_estimate",)))
    out.append("</section>")

    sections = data["sections"]
    if "subject_requests" in sections:
        out.append('<section id="subject-requests"><h2>Data subject requests</h2>')
        out.append(_table(sections["subject_requests"], [
            ("kind", "kind"), ("open", "open"), ("overdue", "overdue"), ("fulfilled", "closed"),
            ("oldest_open_due", "oldest open due")], num=("open", "overdue", "fulfilled")))
        out.append("</section>")
    if "legal_holds" in sections:
        out.append('<section id="legal-holds"><h2>Legal holds in force</h2>')
        out.append(_table(sections["legal_holds"], [("id", "hold"), ("reference", "reference"), ("scope", "scope"),
                                                    ("set_at", "set"), ("ends_at", "ends"),
                                                    ("past_end", "past its end")], num=("id",)))
        out.append("</section>")
    if "entity_rules" in sections:
        out.append('<section id="entity-rules"><h2>Entity rules</h2>')
        rules = sections["entity_rules"]
        preferred = ["rule_name", "table_name", "action", "period", "notice_period", "rows_total", "rows_expired",
                     "in_notice", "rows_deleted", "rows_anonymised", "last_batch_at", "last_error"]
        present = {k for r in rules for k in r}
        keys = [k for k in preferred if k in present] or sorted(present)[:10]
        out.append(_table(rules, [(k, k.replace("_", " ")) for k in keys],
                          num=("rows_total", "rows_expired", "in_notice", "rows_deleted", "rows_anonymised")))
        out.append("</section>")

    a = data["audit"]
    v = a["verify"]
    out.append('<section id="audit"><h2>Audit trail</h2>')
    if v["ok"]:
        out.append(f'<p><span class="ok">Hash chain intact</span>: {int(v["records"]):,} records verified.</p>')
    else:
        out.append(f'<p><span class="bad">Hash chain broken at record {_e(v["first_broken_id"])}</span>: '
                   f'{_e(v["reason"])}</p>')
    out.append(_table(a["actions"], [("action", "action"), ("records", "records"), ("first_at", "first"),
                                     ("last_at", "last")], num=("records",)))
    if a["checkpoints"]:
        out.append("<h3>Retention checkpoints of the audit log</h3>")
        out.append(_table(a["checkpoints"], [("id", "record"), ("at", "at"), ("first_kept_id", "first kept"),
                                             ("records_removed", "records removed")], num=("id",)))
    out.append("</section></main>")
    out.append(f"<footer>Generated by pgretention {_e(data['pgretention'])} from the database itself: "
               "catalog, partitions, job history and the hash-chained audit log. Self-contained; no external "
               "resources.</footer>")
    # mark every chart with its rendered size (lets a headless browser test prove it was laid out)
    out.append("<script>document.querySelectorAll('svg.chart').forEach(function (s) {"
               "var r = s.getBoundingClientRect(); s.setAttribute('data-rendered', "
               "Math.round(r.width) + 'x' + Math.round(r.height)); });</script>")
    out.append("</body></html>")
    return "\n".join(out)


# -- text -----------------------------------------------------------------------------------------
def text_sections(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) pairs for the terminal."""
    s = data["summary"]
    verdict = "CLEAN" if s["clean"] else f"{s['violations']} VIOLATION(S)"
    tables = [{
        "table": t["table_name"], "class": t["class_name"], "period": _interval(t["drop_after"]),
        "overshoot": _duration(t["worst_case_overshoot_seconds"]), "oldest": _duration(t["oldest_row_age_seconds"]),
        "past period": t["rows_past_period"], "past +overshoot": t["rows_past_overshoot"],
        "default": f"{t['default_rows']} ({t['expired_default_rows']} expired)", "no time": t["null_time_rows"],
    } for t in data["tables"]]
    findings = [{"severity": f["severity"], "section": f["section"], "object": f["object"],
                 "finding": f["message"]} for f in data["findings"]]
    out = [(f"pgretention compliance report: {data['database']} at {_fmt(data['reference_time'])}: {verdict}, "
            f"{s['warnings']} warning(s)", findings), ("retention per table and class", tables)]
    runs = [{"run": r["id"], "runner": r["runner"], "status": r["status"], "started": _fmt(r["started_at"]),
             "partitions dropped": r["partitions_dropped"], "rows deleted": r["rows_deleted"],
             "message": r["message"] or ""} for r in data["jobs"]["recent_runs"][:5]]
    out.append(("recent runs", runs))
    for name, rows in data["sections"].items():
        if name != "entity_rules":
            out.append((name.replace("_", " "), rows))
    v = data["audit"]["verify"]
    out.append(("audit chain", [{"intact": v["ok"], "records": v["records"], "first broken": v["first_broken_id"],
                                 "reason": v["reason"]}]))
    return out


# -- metrics --------------------------------------------------------------------------------------
METRICS: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str, str, str], ...]], ...] = (
    ("pgretention.metrics_class", ("table_name", "class_name"), (
        ("oldest_row_age_seconds", "pgretention_oldest_row_age_seconds", "gauge", "Age of the oldest row"),
        ("drop_after_seconds", "pgretention_retention_seconds", "gauge", "Promised retention period"),
        ("worst_case_overshoot_seconds", "pgretention_worst_case_overshoot_seconds", "gauge",
         "Partition interval plus the longest gap between runs"),
        ("partitions", "pgretention_partitions", "gauge", "Time partitions"),
        ("bytes", "pgretention_bytes", "gauge", "Size of the partitions"),
        ("rows_past_period", "pgretention_rows_past_period", "gauge", "Rows older than the period"),
        ("rows_past_overshoot", "pgretention_rows_past_overshoot", "gauge",
         "Rows older than period + worst-case overshoot (must be 0)"),
        ("default_rows", "pgretention_default_rows", "gauge", "Rows in default partitions"),
        ("expired_default_rows", "pgretention_expired_default_rows", "gauge", "Expired rows in default partitions"),
        ("null_time_rows", "pgretention_null_time_rows", "gauge", "Rows without a timestamp"),
    )),
    ("pgretention.metrics_action", ("action", "object"), (
        ("records_total", "pgretention_actions_total", "counter", "Audited actions since install"),
        ("rows_total", "pgretention_action_rows_total", "counter", "Rows removed or changed by audited actions"),
    )),
    ("pgretention.metrics_run", (), (
        ("last_run_timestamp_seconds", "pgretention_last_run_timestamp_seconds", "gauge", "Start of the last run"),
        ("last_success_timestamp_seconds", "pgretention_last_success_timestamp_seconds", "gauge",
         "End of the last successful run"),
        ("failed_runs_1d", "pgretention_failed_runs_1d", "gauge", "Failed runs in the last day"),
        ("pending_ops", "pgretention_pending_operations", "gauge", "Detached partitions waiting to be dropped"),
        ("audit_records_total", "pgretention_audit_records_total", "counter", "Audit records written"),
    )),
    ("pgretention.metrics_finding", ("section", "severity"), (
        ("findings", "pgretention_findings", "gauge", "Open findings of the compliance report (violations: 0)"),
    )),
    ("pgretention.metrics_request", ("kind",), (
        ("open", "pgretention_requests_open", "gauge", "Open data subject requests"),
        ("overdue", "pgretention_requests_overdue", "gauge", "Overdue data subject requests"),
    )),
)


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: Any) -> str:
    if v is None:
        return "NaN"
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


def prometheus_text(conn: Conn) -> str:
    """All metrics views in the Prometheus text exposition format."""
    from psycopg import sql

    lines: list[str] = []
    for view, labels, metrics in METRICS:
        schema, name = view.split(".")
        with translated(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            rows = cur.fetchall()
        for column, metric, kind, help_text in metrics:
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} {kind}")
            for r in rows:
                lab = ",".join(f'{k}="{_label(r[k])}"' for k in labels)
                lines.append(f"{metric}{{{lab}}} {_number(r[column])}" if lab else f"{metric} {_number(r[column])}")
    lines.append("# HELP pgretention_up 1 when the metrics were read from the database")
    lines.append("# TYPE pgretention_up gauge")
    lines.append("pgretention_up 1")
    return "\n".join(lines) + "\n"


__all__ = ["collect", "render_html", "text_sections", "prometheus_text", "schedule_findings"]
