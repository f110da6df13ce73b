-- Default settings; an existing value is never overwritten on upgrade.
INSERT INTO pgretention.setting (name, value, description) VALUES
    ('lock_timeout', '20ms', 'lock_timeout for each DDL attempt on a live parent table'),
    ('lock_retries', '3000', 'attempts per partition before it is left for the next run'),
    ('retry_backoff_max', '500ms', 'longest pause between two lock attempts (backoff doubles up to this)'),
    ('max_lock_wait_total', '10min', 'a run stops retrying a partition after waiting this long in all'),
    ('batch_size', '5000', 'rows per transaction for row-level work (default partitions, moved members)'),
    ('schedule', '7 * * * *', 'pg_cron schedule of the maintenance job (GMT with pg_cron 1.4)'),
    ('schedule_max_gap', '1 hour', 'longest gap between two scheduled runs; part of the worst-case overshoot'),
    ('job_history_keep', '90 days', 'how long pgretention.job_run rows are kept'),
    ('allow_future_reference_time', 'off',
     'on: run() may be given a reference time in the future (tests, demos); never in production')
ON CONFLICT (name) DO NOTHING;
