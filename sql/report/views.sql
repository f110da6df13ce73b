-- Metrics for the monitoring people already run: views shaped for postgres_exporter custom
-- queries (one row per label set, numeric columns as gauges or counters) and read by
-- `pgretention metrics` for the Prometheus text format. See docs/audit-and-report.md.

-- Per table and class: ages in seconds, rows past the period, rows in default partitions.
CREATE OR REPLACE VIEW pgretention.metrics_class AS
SELECT r.table_name, r.class_name,
       coalesce(extract(epoch FROM r.oldest_row_age), 0)::float8 AS oldest_row_age_seconds,
       extract(epoch FROM r.drop_after)::float8 AS drop_after_seconds,
       extract(epoch FROM r.worst_case_overshoot)::float8 AS worst_case_overshoot_seconds,
       r.partitions::float8 AS partitions,
       r.total_bytes::float8 AS bytes,
       r.rows_past_period::float8 AS rows_past_period,
       r.rows_past_overshoot::float8 AS rows_past_overshoot,
       r.default_rows::float8 AS default_rows,
       r.expired_default_rows::float8 AS expired_default_rows,
       r.null_time_rows::float8 AS null_time_rows,
       r.pending_ops::float8 AS pending_ops
FROM pgretention.report_tables(NULL) r;

-- Counters since install, per action and object (partitions dropped, rows purged, ...).
CREATE OR REPLACE VIEW pgretention.metrics_action AS
SELECT c.action, c.object, c.records::float8 AS records_total, c.rows::float8 AS rows_total,
       extract(epoch FROM c.last_at)::float8 AS last_timestamp_seconds
FROM pgretention.audit_counter c;

-- The maintenance runs.
CREATE OR REPLACE VIEW pgretention.metrics_run AS
SELECT coalesce(extract(epoch FROM (SELECT max(j.started_at) FROM pgretention.job_run j)), 0)::float8
           AS last_run_timestamp_seconds,
       coalesce(extract(epoch FROM (SELECT max(j.finished_at) FROM pgretention.job_run j
                                    WHERE j.status IN ('ok', 'partial'))), 0)::float8
           AS last_success_timestamp_seconds,
       (SELECT count(*) FROM pgretention.job_run j
        WHERE j.status = 'failed' AND j.started_at > now() - interval '1 day')::float8 AS failed_runs_1d,
       (SELECT count(*) FROM pgretention.partition_op o WHERE o.state = 'detached')::float8 AS pending_ops,
       (SELECT h.records_total FROM pgretention.audit_head h WHERE h.singleton)::float8 AS audit_records_total;

-- Open findings of the compliance report per section and severity.
CREATE OR REPLACE VIEW pgretention.metrics_finding AS
WITH f AS MATERIALIZED (SELECT * FROM pgretention.report_findings(NULL))
SELECT s.section, v.severity, count(f.check_name)::float8 AS findings
FROM (SELECT x.section FROM (VALUES ('tables'), ('jobs'), ('audit'), ('subject_requests'), ('legal_holds'),
                                    ('anonymisation'), ('entity_rules')) AS x(section)
      UNION SELECT f.section FROM f) AS s
CROSS JOIN (VALUES ('violation'), ('warning')) AS v(severity)
LEFT JOIN f ON f.section = s.section AND f.severity = v.severity
GROUP BY s.section, v.severity;

-- Subject request backlog per kind.
CREATE OR REPLACE VIEW pgretention.metrics_request AS
SELECT r.kind, r.open::float8 AS open, r.overdue::float8 AS overdue
FROM pgretention.report_subject_requests(NULL) r;
