"""The compliance report and the metrics, gathered from the database.

:func:`collect` (:mod:`.collect`) asks the SQL ``report_*`` functions and the pg_cron schedule and returns
plain data; :func:`render_html` (:mod:`.html`) turns it into one self-contained HTML page,
:func:`text_sections` (:mod:`.text`) into tables for the terminal, and :func:`prometheus_text`
(:mod:`.metrics`) reads the metrics views into the Prometheus text exposition format.
"""

from __future__ import annotations

from pgretention.report.collect import collect, schedule_findings
from pgretention.report.html import render_html
from pgretention.report.metrics import prometheus_text
from pgretention.report.text import text_sections

__all__ = ["collect", "render_html", "text_sections", "prometheus_text", "schedule_findings"]
