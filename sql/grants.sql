-- Least privilege. Nothing is executable or readable by PUBLIC; each role gets what its job needs.
--   pgretention_admin:    policies, classes, holds, settings (plus everything the operator can do)
--   pgretention_operator: run jobs, plan, read status
--   pgretention_auditor:  read the audit log, job history and reports
-- Key material (anonymiser) is readable only by the owner of the schema.
REVOKE ALL ON SCHEMA pgretention FROM PUBLIC;
GRANT USAGE ON SCHEMA pgretention TO pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL TABLES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA pgretention FROM PUBLIC, pgretention_admin, pgretention_operator, pgretention_auditor;

GRANT SELECT ON pgretention.setting, pgretention.job_run TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT SELECT ON pgretention.audit_log TO pgretention_auditor, pgretention_admin;
GRANT SELECT ON pgretention.alembic_version TO pgretention_admin, pgretention_operator, pgretention_auditor;

GRANT EXECUTE ON FUNCTION pgretention.version_info() TO pgretention_admin, pgretention_operator, pgretention_auditor;
GRANT EXECUTE ON FUNCTION pgretention._audit_record_text(pgretention.audit_log) TO pgretention_auditor, pgretention_admin;
GRANT EXECUTE ON FUNCTION pgretention.verify_audit() TO pgretention_auditor, pgretention_admin;
GRANT EXECUTE ON FUNCTION pgretention.set_setting(text, text) TO pgretention_admin;
