-- Least privilege. Nothing is executable or readable by PUBLIC; each role gets what its job needs.
--   pgretention_admin:    policies, classes, holds, settings (plus everything the operator can do)
--   pgretention_operator: run jobs, plan, read status
--   pgretention_auditor:  read the audit log, job history and reports
-- Key material (pgretention.keyring and the views of it) is readable only by the owner of the
-- schema. The deprecated old names (deprecated.sql) keep the grants they had, next to their new names.
REVOKE ALL ON SCHEMA pgretention FROM PUBLIC;
GRANT USAGE ON SCHEMA pgretention TO pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL TABLES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;

-- Core: settings, versions, job bookkeeping shared by the runners (which are SECURITY INVOKER)
GRANT SELECT ON pgretention.setting, pgretention.job_run TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.alembic_version TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT EXECUTE ON FUNCTION pgretention.version_info() TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT EXECUTE ON FUNCTION pgretention.setting_set(text, text), pgretention.set_setting(text, text) TO pgretention_admin;
-- The runners are procedures (SECURITY INVOKER): what they call is granted to the operator. A run
-- is begun and ended through these; its helpers (below, per engine) take the run's id and accept
-- it only in the backend that began it (core/jobs.sql). The functions that do the work
-- (_premake, _detach_leaf, _finish_op, _purge_*, _anon_prepare/copy/swap/finish, _entity_prepare,
-- _entity_batch, ...) are granted to no one. Simulated time (simulation_enable/disable) is the
-- installing role's alone.
GRANT EXECUTE ON FUNCTION
    pgretention._setting_value(text),
    pgretention._managed(text),
    -- called by _managed as the caller: PostgreSQL 17 checks the privilege, 15 folded the call away
    pgretention._split_name(text),
    pgretention._check_ident(text, text),
    pgretention._hidden_chars(),
    pgretention._visible(text),
    pgretention._rule(text),
    pgretention._job_begin(text, timestamptz, text, text),
    pgretention._job_end(bigint, jsonb),
    pgretention._job_settings(),
    pgretention._pause_next(float8, float8),
    pgretention._waited_enough(int, int, timestamptz, float8),
    pgretention._ms_since(timestamptz)
    TO pgretention_admin, pgretention_operator;

-- Audit log
GRANT SELECT ON pgretention.audit_log TO pgretention_auditor, pgretention_admin;
GRANT SELECT ON pgretention.audit_head, pgretention.audit_counter TO pgretention_admin, pgretention_auditor;
GRANT EXECUTE ON FUNCTION
    pgretention._audit_record_text(pgretention.audit_log),
    pgretention.audit_verify(), pgretention.verify_audit(),
    pgretention.audit_records(timestamptz, text, text, int)
    TO pgretention_auditor, pgretention_admin;
GRANT EXECUTE ON FUNCTION pgretention.audit_retention(timestamptz) TO pgretention_admin, pgretention_operator;

-- Partition engine
GRANT SELECT ON pgretention.managed_table, pgretention.retention_class, pgretention.partition_op
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.class_member TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION
    pgretention.table_create(text, text, text, text, jsonb, text, text, int, text, timestamptz, text, text, text, text, text,
                             text, text),
    pgretention.create_table(text, text, text, text, jsonb, text, text, int, text, timestamptz, text, text, text, text, text,
                             text, text),
    pgretention.table_manage(text, text, text, jsonb, int, text, timestamptz, text, text, text),
    pgretention.manage_table(text, text, text, jsonb, int, text, timestamptz, text, text, text),
    pgretention.class_add(text, text, text, text, text[], timestamptz),
    pgretention.add_class(text, text, text, text, text[], timestamptz),
    pgretention.class_set(text, text, text, text),
    pgretention.set_class(text, text, text, text),
    pgretention.member_assign(text, text, text, timestamptz),
    pgretention.assign_member(text, text, text, timestamptz),
    pgretention.table_release(text),
    pgretention.release_table(text)
    TO pgretention_admin;
-- run is a procedure (it commits per unit of work); its privileged steps go through _run_work and
-- _run_step, which take the run's id
GRANT EXECUTE ON PROCEDURE pgretention.run(timestamptz, text, text) TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION
    pgretention._run_targets(text),
    pgretention._run_steps(text),
    pgretention._run_work(bigint, text, int, text),
    pgretention._run_step(bigint, text, int, text, regclass, bigint, int),
    pgretention._finalize_pending_detach(),
    pgretention.plan(timestamptz, text)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.status(timestamptz)
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
-- the partition interval tuner: the operator reads the advice, the admin applies it
GRANT EXECUTE ON FUNCTION pgretention.tune(text, bigint, int, interval), pgretention._tune_observed(int, text, timestamptz)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.table_set_interval(text, text, int), pgretention.set_partition_interval(text, text, int)
    TO pgretention_admin;

-- Subject requests and legal holds
GRANT SELECT ON pgretention.subject_table, pgretention.subject_column, pgretention.tenant
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.legal_hold TO pgretention_admin, pgretention_auditor;
GRANT SELECT (id, kind, identifier_hashes, tenant, external_ref, received_at, due_at, extended_due_at,
              extension_reason, status, fulfilled_at, result) ON pgretention.subject_request
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.overdue_requests TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT EXECUTE ON FUNCTION
    pgretention.subject_table_register(text, jsonb, text, text, text, jsonb, text),
    pgretention.register_subject_table(text, jsonb, text, text, text, jsonb, text),
    pgretention.subject_table_unregister(text),
    pgretention.tenant_register(text),
    pgretention.register_tenant(text),
    pgretention.subject_index_ddl(text),
    pgretention._attach_leaf_indexes(text, text, text),
    pgretention.restriction_view_create(text),
    pgretention.create_unrestricted_view(text),
    pgretention.hold_set(text, text, text, text, text, text, timestamptz, timestamptz, timestamptz),
    pgretention.hold_release(bigint)
    TO pgretention_admin;
-- a subject's rows are read through a recorded request, audited (subject_rows(bigint),
-- request_export); subject_rows(jsonb, text) by identifiers is the owner's
GRANT EXECUTE ON FUNCTION
    pgretention.request_create(text, jsonb, text, timestamptz, text),
    pgretention.request_extend(bigint, timestamptz, text),
    pgretention.request_export(bigint, boolean),
    pgretention.request_fulfil(bigint, timestamptz),
    pgretention.request_reject(bigint, text),
    pgretention.subject_rows(bigint)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.request_overdue(timestamptz), pgretention.overdue_requests_at(timestamptz)
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
-- applications' roles get is_restricted from the DBA, with USAGE on the schema (subjects/restriction.sql)
GRANT EXECUTE ON FUNCTION pgretention.is_restricted(text, text)
    TO pgretention_admin, pgretention_operator, pgretention_auditor;

-- Compliance report and metrics
GRANT EXECUTE ON FUNCTION
    pgretention.report_tables(timestamptz),
    pgretention.report_age_histogram(timestamptz, int),
    pgretention.report_purges(timestamptz, int),
    pgretention.report_sections(),
    pgretention.report_subject_requests(timestamptz),
    pgretention.report_holds(timestamptz),
    pgretention.report_entity_rules(timestamptz),
    pgretention.report_findings(timestamptz)
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
-- the report shows what the next run would remove: plan changes nothing
GRANT EXECUTE ON FUNCTION pgretention.plan(timestamptz, text) TO pgretention_auditor;
GRANT SELECT ON pgretention.metrics_class, pgretention.metrics_action, pgretention.metrics_run,
    pgretention.metrics_finding, pgretention.metrics_request
    TO pgretention_admin, pgretention_operator, pgretention_auditor;

-- Entity engine (row-level rules). The hash key of anonymise rules stays owner-only.
GRANT SELECT ON pgretention.entity_rule TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.entity_notice, pgretention.entity_notices, pgretention.entity_work
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION
    pgretention.entity_rule_create(text, text, text, jsonb, text, text, jsonb, jsonb, text, text, text),
    pgretention.create_entity_rule(text, text, text, jsonb, text, text, jsonb, jsonb, text, text, text),
    pgretention.entity_rule_drop(text),
    pgretention.drop_entity_rule(text),
    pgretention.entity_erase(text, text),
    pgretention.erase_entity(text, text)
    TO pgretention_admin;
GRANT EXECUTE ON PROCEDURE pgretention.entity_run(timestamptz, text, text), pgretention.run_entities(timestamptz, text, text)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION
    pgretention._entity_run_rules(text),
    pgretention._entity_run_prepare(bigint, int),
    pgretention._entity_run_batch(bigint, int, int, int),
    pgretention._entity_next_limit(int, int, float8, float8, int),
    pgretention.entity_plan(timestamptz, text)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.entity_status(timestamptz)
    TO pgretention_admin, pgretention_operator, pgretention_auditor;

-- Adoption of existing plain tables (adopt/)
GRANT SELECT ON pgretention.adoption TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT EXECUTE ON FUNCTION
    pgretention.adopt_plan(text, text, text, text, int, text, text, text, timestamptz),
    pgretention.adopt_missing_indexes(text, text),
    pgretention.adopt_cancel(text),
    pgretention.adopt_undo(text),
    pgretention.unadopt(text),
    pgretention._adopt_prepare(text, text, text, text, int, text, text, text, timestamptz),
    pgretention._adopt_validate(int),
    pgretention._adopt_abandon(int, text),
    pgretention._adopt_swap(int)
    TO pgretention_admin;
GRANT EXECUTE ON PROCEDURE pgretention.adopt(text, text, text, text, int, text, text, text, timestamptz)
    TO pgretention_admin;
-- (_adopt_purge_batch is reached through _run_step only)

-- Anonymiser, roll-ups, encrypted fields. Admins and auditors see the epochs of the pseudonym keys,
-- never the keys.
GRANT SELECT ON pgretention.anon_rule, pgretention.anon_op, pgretention.rollup, pgretention.rollup_done
    TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT (epoch, created_at, rotated_at, destroyed_at) ON pgretention.anon_key TO pgretention_admin, pgretention_auditor;
GRANT EXECUTE ON FUNCTION
    pgretention.anon_rule_set(text, text, text, text),
    pgretention.anon_set_rule(text, text, text, text),
    pgretention.anon_key_rotate(text),
    pgretention.anon_key_destroy(text),
    pgretention.rollup_add(text, text, jsonb, jsonb, int),
    pgretention.add_rollup(text, text, jsonb, jsonb, int)
    TO pgretention_admin;
GRANT EXECUTE ON PROCEDURE pgretention.anon_run(timestamptz, text), pgretention.run_anonymiser(timestamptz, text),
    pgretention._anon_run(bigint, text), pgretention._anon_drive(bigint, bigint)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION
    pgretention._anon_open_ops(), pgretention._anon_work(bigint, int, text),
    pgretention._anon_step(bigint, text, bigint, int, text, regclass),
    pgretention.anon_unruled_columns(int)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.field_encrypt(text, text), pgretention.encrypt_field(text, text)
    TO pgretention_admin, pgretention_operator;
GRANT EXECUTE ON FUNCTION pgretention.field_decrypt(bytea, text), pgretention.decrypt_field(bytea, text)
    TO pgretention_admin;
