CREATE OR REPLACE TRIGGER audit_log_chain
    BEFORE INSERT ON pgretention.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgretention._audit_chain();

CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON pgretention.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgretention._audit_append_only();

CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON pgretention.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION pgretention._audit_append_only();
