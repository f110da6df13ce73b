"""Fixtures and helpers of the planted-violation suite.

Every test starts from a clean report (``reporting``: installed with its pg_cron job, one successful
run recorded), plants one kind of violation, and asserts that the compliance report
(``report_findings``, ``pgretention report --check``, the metrics) finds it as a violation with a
useful message, or that the engine itself behaves.

The pg_cron job is scheduled and active as in production, but its command is replaced by a no-op so
that pg_cron never runs the engine in a test database behind the test's back.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from pgretention import installer, schedule
from tests.fix_db import DB, run, simulate

HEARTBEAT = "public.heartbeat"


@pytest.fixture
def reporting(db: DB) -> DB:
    """Installed with the pg_cron job (a no-op command); a small table the baseline runs work on."""
    installer.install(db.dsn)
    with db.server.admin() as adm:
        job = adm.execute("SELECT jobid FROM cron.job WHERE jobname = %s", [schedule.job_name(db.name)]).fetchone()
        assert job is not None
        adm.execute("SELECT cron.alter_job(%s, command := 'SELECT 1')", [job[0]])
    simulate(db)
    db.execute("SELECT pgretention.table_create(%s, 'id bigint, t timestamptz', 't', '1 day', %s)",
               [HEARTBEAT, Jsonb({"all": {"drop_after": "30 days"}})])
    return db



def heartbeat(db: DB, at: datetime | None = None) -> None:
    """A successful run at ``at`` that touches only the heartbeat table (the report's job check)."""
    assert run(db, at, HEARTBEAT)["status"] == "ok"


def findings(db: DB, at: datetime | None = None) -> list[dict[str, Any]]:
    rows = db.all("SELECT section, severity, object, check_name, message, value FROM pgretention.report_findings(%s)",
                  [at])
    return [dict(zip(("section", "severity", "object", "check_name", "message", "value"), r, strict=True)) for r in rows]


def violations(db: DB, about: str, at: datetime | None = None, *, pattern: str = "") -> list[dict[str, Any]]:
    """Violations whose object or message names ``about`` (and whose message matches ``pattern``)."""
    return [f for f in findings(db, at) if f["severity"] == "violation"
            and (about in (f["object"] or "") or about in (f["message"] or ""))
            and re.search(pattern, f["message"] or "", re.I)]


def _now_arg(at: datetime | None) -> list[str]:
    """The CLI's --now (UTC)."""
    return ["--now", at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")] if at else []


def report_json(db: DB, at: datetime | None = None) -> dict[str, Any]:
    """``pgretention report --format json`` (it must not fail)."""
    res = db.cli("report", "--format", "json", *_now_arg(at))
    assert res.stdout.lstrip().startswith("{"), (res.returncode, res.stderr)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def check_exit(db: DB, at: datetime | None = None) -> int:
    """Exit status of ``pgretention report --check`` (0: clean, 1: violations; an error fails the test)."""
    res = db.cli("report", "--check", *_now_arg(at))
    assert res.returncode == 0 or "violation" in res.stderr, (res.returncode, res.stderr)
    return res.returncode


def assert_clean(db: DB, at: datetime | None = None) -> None:
    """The baseline before a violation is planted."""
    found = [f"{f['object']}: {f['message']}" for f in findings(db, at) if f["severity"] == "violation"]
    assert found == [], found


Sample = tuple[str, dict[str, str], float]


def metric_samples(text: str) -> list[Sample]:
    """Samples of the Prometheus text format: (name, labels, value)."""
    out: list[Sample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, line
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of ``name`` over samples carrying ``labels`` (other labels, such as a database, ignored)."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def metrics(db: DB) -> list[Sample]:
    res = db.cli("metrics")
    assert res.returncode == 0, res.stderr
    return metric_samples(res.stdout)
