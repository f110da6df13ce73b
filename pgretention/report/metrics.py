"""The metrics views in the Prometheus text exposition format (``pgretention metrics``)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgretention.db import Conn, rows

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
    lines: list[str] = []
    for view, labels, metrics in METRICS:
        schema, name = view.split(".")
        found = rows(conn, sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        for column, metric, kind, help_text in metrics:
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} {kind}")
            for r in found:
                lab = ",".join(f'{k}="{_label(r[k])}"' for k in labels)
                lines.append(f"{metric}{{{lab}}} {_number(r[column])}" if lab else f"{metric} {_number(r[column])}")
    lines.append("# HELP pgretention_up 1 when the metrics were read from the database")
    lines.append("# TYPE pgretention_up gauge")
    lines.append("pgretention_up 1")
    return "\n".join(lines) + "\n"
