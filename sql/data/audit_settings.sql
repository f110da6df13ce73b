-- Settings of the audit log and the compliance report; an existing value is never overwritten.
INSERT INTO pgretention.setting (name, value, description) VALUES
    ('audit_keep', '5 years', 'retention of the audit log (at least 1 year); older records leave behind a checkpoint record')
ON CONFLICT (name) DO NOTHING;
