"""The report as text: sections for the terminal, and values as a reader sees them (shared with the HTML)."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any


def fmt(v: Any) -> str:
    """A value as a reader sees it: times in UTC to the minute, numbers grouped, – for none."""
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


def duration(seconds: float | None) -> str:
    """1 d 1 h, 20 d, 3 h 30 min."""
    if seconds is None:
        return "–"
    total = int(round(seconds / 60))
    days, rest = divmod(total, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days:,} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or "0 min"


def interval(text: Any) -> str:
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


def text_sections(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) pairs for the terminal."""
    s = data["summary"]
    verdict = "CLEAN" if s["clean"] else f"{s['violations']} VIOLATION(S)"
    tables = [{
        "table": t["table_name"], "class": t["class_name"], "period": interval(t["drop_after"]),
        "overshoot": duration(t["worst_case_overshoot_seconds"]), "oldest": duration(t["oldest_row_age_seconds"]),
        "past period": t["rows_past_period"], "past +overshoot": t["rows_past_overshoot"],
        "default": f"{t['default_rows']} ({t['expired_default_rows']} expired)", "no time": t["null_time_rows"],
    } for t in data["tables"]]
    findings = [{"severity": f["severity"], "section": f["section"], "object": f["object"],
                 "finding": f["message"]} for f in data["findings"]]
    out = [(f"pgretention compliance report: {data['database']} at {fmt(data['reference_time'])}: {verdict}, "
            f"{s['warnings']} warning(s)", findings), ("retention per table and class", tables)]
    runs = [{"run": r["id"], "runner": r["runner"], "status": r["status"], "started": fmt(r["started_at"]),
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
